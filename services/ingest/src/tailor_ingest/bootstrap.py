"""Composition root of the ingest service: the one place that wires its parts together."""

from __future__ import annotations

from datetime import timedelta

from tailor.ingest.v1 import admin_pb2_grpc, ingest_pb2_grpc
from tailor_core.app import SERVICE_SCOPES, Components, ServiceContext, ServiceDefinition
from tailor_core.consent_client import ServiceToken
from tailor_core.server import ServiceBinding
from tailor_ingest import privacy_handlers
from tailor_ingest.adapters.subject_keys import SubjectKeys
from tailor_ingest.api_keys import ApiKeyRegistry
from tailor_ingest.capacity import Capacity
from tailor_ingest.collector import Collector
from tailor_ingest.entrypoints.grpc import IngestAdminServicer, IngestServicer
from tailor_ingest.entrypoints.http import SegmentIntake, start_http
from tailor_ingest.key_admin import KeyAdmin
from tailor_ingest.plans import PlanBook
from tailor_ingest.quality import QualityCounters
from tailor_ingest.retention import DedupRetention
from tailor_ingest.settings import IngestSettings


async def build(context: ServiceContext) -> Components:
    """Build the ingest service's gRPC services, background loops and privacy handlers."""
    settings = context.settings
    assert isinstance(settings, IngestSettings)
    secret = settings.token_secret.get_secret_value()
    keys = SubjectKeys(settings.consent_addr, ServiceToken(secret, "ingest", SERVICE_SCOPES))
    registry = ApiKeyRegistry(
        context.pool,
        default_rate=settings.default_rate_limit,
        default_burst=settings.default_burst,
    )
    plans = PlanBook(context.pool)
    counters = QualityCounters(context.pool)
    collector = Collector(
        pool=context.pool,
        js=context.js,
        naming=context.naming,
        consent=context.consent,
        keys=keys,
        plans=plans,
        counters=counters,
    )
    capacity = Capacity(settings.max_inflight_events)
    shutdown = [keys.close]
    if settings.http_port:
        runner = await start_http(
            SegmentIntake(collector, registry, capacity), settings.grpc_host, settings.http_port
        )
        shutdown.insert(0, runner.cleanup)
    return Components(
        services=[
            ServiceBinding(
                ingest_pb2_grpc.add_IngestServiceServicer_to_server,
                IngestServicer(collector, registry, capacity),
                "tailor.ingest.v1.IngestService",
            ),
            ServiceBinding(
                admin_pb2_grpc.add_IngestAdminServiceServicer_to_server,
                IngestAdminServicer(KeyAdmin(context.pool, registry), plans, context.pool),
                "tailor.ingest.v1.IngestAdminService",
            ),
        ],
        background=[
            counters,
            DedupRetention(context.pool, timedelta(days=settings.dedup_retention_days)),
        ],
        on_shutdown=shutdown,
        privacy=privacy_handlers.handlers(keys),
        api_keys=registry.authenticate,
    )


DEFINITION = ServiceDefinition(
    name="ingest",
    migrations_package="tailor_ingest.migrations",
    build=build,
    settings_class=IngestSettings,
)
