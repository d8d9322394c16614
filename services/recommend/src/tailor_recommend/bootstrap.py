"""Composition root of the recommend service: the one place that wires its parts together.

The v1 servicers below are the generated bases, which answer UNIMPLEMENTED for every RPC
until the recommend service's own issue lands its domain code, repository and servicer.
"""

from __future__ import annotations

from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.privacy import PrivacyHandlers, holds_nothing_erase, holds_nothing_export
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the recommend service's gRPC services and consumers from the shared context."""
    return Components(
        services=[
            ServiceBinding(
                recommend_pb2_grpc.add_RecommendServiceServicer_to_server,
                unimplemented(recommend_pb2_grpc.RecommendServiceServicer),
                "tailor.recommend.v1.RecommendService",
            ),
        ],
        # Holds no personal data yet: its export is empty and its erasure deletes nothing,
        # but it takes part in every request, so completion means every service confirmed.
        privacy=PrivacyHandlers("recommend", holds_nothing_export, holds_nothing_erase),
    )


DEFINITION = ServiceDefinition(
    name="recommend", migrations_package="tailor_recommend.migrations", build=build
)
