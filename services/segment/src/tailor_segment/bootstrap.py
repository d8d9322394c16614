"""Composition root of the segment service: the one place that wires its parts together."""

from __future__ import annotations

from datetime import timedelta

from tailor.segment.v1 import segment_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.server import ServiceBinding
from tailor_segment import privacy_handlers
from tailor_segment.consumers import segment_consumers
from tailor_segment.discovery import Discovery
from tailor_segment.entrypoints.grpc import SegmentServicer
from tailor_segment.loops import Backfill, MembershipClock
from tailor_segment.membership import Definitions, MembershipEngine
from tailor_segment.segments import SegmentCommands
from tailor_segment.settings import SegmentSettings


async def build(context: ServiceContext) -> Components:
    """Build the segment service's gRPC service, consumers, loops and privacy handlers."""
    settings = context.settings
    assert isinstance(settings, SegmentSettings)
    engine = MembershipEngine(
        consent=context.consent, naming=context.naming, definitions=Definitions()
    )
    clock = MembershipClock(
        context.pool,
        engine,
        interval_seconds=settings.clock_seconds,
        retention=timedelta(days=settings.event_retention_days),
    )
    backfill = Backfill(context.pool, engine, batch=settings.backfill_batch)
    discovery = Discovery(
        context.pool, context.consent, interval_seconds=settings.clustering_interval_seconds
    )
    commands = SegmentCommands(context.pool, engine, context.consent, on_new_version=backfill.wake)
    return Components(
        services=[
            ServiceBinding(
                segment_pb2_grpc.add_SegmentServiceServicer_to_server,
                SegmentServicer(context.pool, commands, discovery, context.consent),
                "tailor.segment.v1.SegmentService",
            ),
        ],
        consumers=segment_consumers(
            pool=context.pool,
            js=context.js,
            naming=context.naming,
            engine=engine,
            events_batch=settings.events_batch,
        ),
        background=[clock, backfill, discovery],
        privacy=privacy_handlers.handlers(),
    )


DEFINITION = ServiceDefinition(
    name="segment",
    migrations_package="tailor_segment.migrations",
    build=build,
    settings_class=SegmentSettings,
)
