"""Composition root of the consent service: the one place that wires its parts together."""

from __future__ import annotations

from tailor.consent.v1 import audit_pb2_grpc, consent_pb2_grpc, keys_pb2_grpc
from tailor.privacy.v1 import privacy_pb2_grpc
from tailor_consent import privacy_handlers
from tailor_consent.entrypoints.grpc import (
    AuditServicer,
    ConsentServicer,
    KeyServicer,
    PrivacyServicer,
)
from tailor_consent.identity import IdentityFollower
from tailor_consent.key_service import KeyService
from tailor_consent.ledger_service import ConsentLedger
from tailor_consent.privacy_service import PrivacyWorkflows
from tailor_consent.settings import ConsentSettings
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.bus import ConsumerSpec
from tailor_core.inbox import InboxConsumer
from tailor_core.server import ServiceBinding
from tailor_core.streams import Stream


async def build(context: ServiceContext) -> Components:
    """Build the consent service's gRPC services from the shared context."""
    settings = context.settings
    assert isinstance(settings, ConsentSettings)
    ledger = ConsentLedger(context.pool, context.naming)
    await ledger.start()
    keys = KeyService(context.pool, ledger, settings.master_key_ring(), settings.master_key_id)
    workflows = PrivacyWorkflows(context.pool, context.js, context.naming, settings.holders())
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
            ServiceBinding(
                privacy_pb2_grpc.add_PrivacyServiceServicer_to_server,
                PrivacyServicer(workflows, context.pool),
                "tailor.privacy.v1.PrivacyService",
            ),
        ],
        consumers=[
            reports_consumer(context, workflows),
            IdentityFollower(context.pool, context.js, context.naming, ledger).consumer(),
        ],
        background=[workflows],
        privacy=privacy_handlers.HANDLERS,
    )


def reports_consumer(context: ServiceContext, workflows: PrivacyWorkflows) -> InboxConsumer:
    """Records every service's step reports from the PRIVACY stream."""
    naming = context.naming
    return InboxConsumer(
        pool=context.pool,
        js=context.js,
        spec=ConsumerSpec(
            stream=naming.stream_name(Stream.PRIVACY),
            durable="consent_privacy_reports",
            filter_subject=naming.all_subjects(Stream.PRIVACY),
            description="step reports of data-subject requests",
        ),
        handler=workflows.handle_report_message,
        dead_letter_subject=naming.dead_letter_subject("consent", "privacy_reports"),
    )


DEFINITION = ServiceDefinition(
    name="consent",
    migrations_package="tailor_consent.migrations",
    build=build,
    settings_class=ConsentSettings,
)
