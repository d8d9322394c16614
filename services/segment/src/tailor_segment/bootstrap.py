"""Composition root of the segment service: the one place that wires its parts together.

The v1 servicers below are the generated bases, which answer UNIMPLEMENTED for every RPC
until the segment service's own issue lands its domain code, repository and servicer.
"""

from __future__ import annotations

from tailor.segment.v1 import segment_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.privacy import PrivacyHandlers, holds_nothing_erase, holds_nothing_export
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the segment service's gRPC services and consumers from the shared context."""
    return Components(
        services=[
            ServiceBinding(
                segment_pb2_grpc.add_SegmentServiceServicer_to_server,
                unimplemented(segment_pb2_grpc.SegmentServiceServicer),
                "tailor.segment.v1.SegmentService",
            ),
        ],
        # Holds no personal data yet: its export is empty and its erasure deletes nothing,
        # but it takes part in every request, so completion means every service confirmed.
        privacy=PrivacyHandlers("segment", holds_nothing_export, holds_nothing_erase),
    )


DEFINITION = ServiceDefinition(
    name="segment", migrations_package="tailor_segment.migrations", build=build
)
