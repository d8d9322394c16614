"""Composition root of the ingest service: the one place that wires its parts together.

The v1 servicers below are the generated bases, which answer UNIMPLEMENTED for every RPC
until the ingest service's own issue lands its domain code, repository and servicer.
"""

from __future__ import annotations

from tailor.ingest.v1 import admin_pb2_grpc, ingest_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.privacy import PrivacyHandlers, holds_nothing_erase, holds_nothing_export
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the ingest service's gRPC services and consumers from the shared context."""
    return Components(
        services=[
            ServiceBinding(
                ingest_pb2_grpc.add_IngestServiceServicer_to_server,
                unimplemented(ingest_pb2_grpc.IngestServiceServicer),
                "tailor.ingest.v1.IngestService",
            ),
            ServiceBinding(
                admin_pb2_grpc.add_IngestAdminServiceServicer_to_server,
                unimplemented(admin_pb2_grpc.IngestAdminServiceServicer),
                "tailor.ingest.v1.IngestAdminService",
            ),
        ],
        # Holds no personal data yet: its export is empty and its erasure deletes nothing,
        # but it takes part in every request, so completion means every service confirmed.
        privacy=PrivacyHandlers("ingest", holds_nothing_export, holds_nothing_erase),
    )


DEFINITION = ServiceDefinition(
    name="ingest", migrations_package="tailor_ingest.migrations", build=build
)
