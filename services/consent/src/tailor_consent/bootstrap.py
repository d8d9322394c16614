"""Composition root of the consent service: the one place that wires its parts together.

The v1 servicers below are the generated bases, which answer UNIMPLEMENTED for every RPC
until the consent service's own issue lands its domain code, repository and servicer.
"""

from __future__ import annotations

from tailor.consent.v1 import audit_pb2_grpc, consent_pb2_grpc, keys_pb2_grpc
from tailor.privacy.v1 import privacy_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the consent service's gRPC services and consumers from the shared context."""
    return Components(
        services=[
            ServiceBinding(
                consent_pb2_grpc.add_ConsentServiceServicer_to_server,
                unimplemented(consent_pb2_grpc.ConsentServiceServicer),
                "tailor.consent.v1.ConsentService",
            ),
            ServiceBinding(
                keys_pb2_grpc.add_KeyServiceServicer_to_server,
                unimplemented(keys_pb2_grpc.KeyServiceServicer),
                "tailor.consent.v1.KeyService",
            ),
            ServiceBinding(
                audit_pb2_grpc.add_AuditServiceServicer_to_server,
                unimplemented(audit_pb2_grpc.AuditServiceServicer),
                "tailor.consent.v1.AuditService",
            ),
            ServiceBinding(
                privacy_pb2_grpc.add_PrivacyServiceServicer_to_server,
                unimplemented(privacy_pb2_grpc.PrivacyServiceServicer),
                "tailor.privacy.v1.PrivacyService",
            ),
        ]
    )


DEFINITION = ServiceDefinition(
    name="consent", migrations_package="tailor_consent.migrations", build=build
)
