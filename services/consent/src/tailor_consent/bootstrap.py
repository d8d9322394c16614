"""Composition root of the consent service: the one place that wires its parts together."""

from __future__ import annotations

from tailor.consent.v1 import audit_pb2_grpc, consent_pb2_grpc, keys_pb2_grpc
from tailor.privacy.v1 import privacy_pb2_grpc
from tailor_consent.entrypoints.grpc import AuditServicer, ConsentServicer, KeyServicer
from tailor_consent.key_service import KeyService
from tailor_consent.ledger_service import ConsentLedger
from tailor_consent.settings import ConsentSettings
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.server import ServiceBinding, unimplemented


async def build(context: ServiceContext) -> Components:
    """Build the consent service's gRPC services from the shared context."""
    settings = context.settings
    assert isinstance(settings, ConsentSettings)
    ledger = ConsentLedger(context.pool, context.naming)
    await ledger.start()
    keys = KeyService(context.pool, ledger, settings.master_key_ring(), settings.master_key_id)
    return Components(
        services=[
            ServiceBinding(
                consent_pb2_grpc.add_ConsentServiceServicer_to_server,
                ConsentServicer(ledger),
                "tailor.consent.v1.ConsentService",
            ),
            ServiceBinding(
                audit_pb2_grpc.add_AuditServiceServicer_to_server,
                AuditServicer(context.pool),
                "tailor.consent.v1.AuditService",
            ),
            ServiceBinding(
                keys_pb2_grpc.add_KeyServiceServicer_to_server,
                KeyServicer(keys),
                "tailor.consent.v1.KeyService",
            ),
            # Not built yet (issue 3 continues): data-subject requests.
            ServiceBinding(
                privacy_pb2_grpc.add_PrivacyServiceServicer_to_server,
                unimplemented(privacy_pb2_grpc.PrivacyServiceServicer),
                "tailor.privacy.v1.PrivacyService",
            ),
        ]
    )


DEFINITION = ServiceDefinition(
    name="consent",
    migrations_package="tailor_consent.migrations",
    build=build,
    settings_class=ConsentSettings,
)
