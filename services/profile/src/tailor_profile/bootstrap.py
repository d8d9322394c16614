"""Composition root of the profile service: the one place that wires its parts together.

The v1 servicers below are the generated bases, which answer UNIMPLEMENTED for every RPC
until the profile service's own issue lands its domain code, repository and servicer.
"""

from __future__ import annotations

from tailor.profile.v1 import profile_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.privacy import PrivacyHandlers, holds_nothing_erase, holds_nothing_export
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the profile service's gRPC services and consumers from the shared context."""
    return Components(
        services=[
            ServiceBinding(
                profile_pb2_grpc.add_ProfileServiceServicer_to_server,
                unimplemented(profile_pb2_grpc.ProfileServiceServicer),
                "tailor.profile.v1.ProfileService",
            ),
        ],
        # Holds no personal data yet: its export is empty and its erasure deletes nothing,
        # but it takes part in every request, so completion means every service confirmed.
        privacy=PrivacyHandlers("profile", holds_nothing_export, holds_nothing_erase),
    )


DEFINITION = ServiceDefinition(
    name="profile", migrations_package="tailor_profile.migrations", build=build
)
