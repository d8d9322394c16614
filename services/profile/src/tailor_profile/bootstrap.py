"""Composition root of the profile service: the one place that wires its parts together."""

from __future__ import annotations

from tailor.profile.v1 import profile_pb2_grpc
from tailor_core.app import SERVICE_SCOPES, Components, ServiceContext, ServiceDefinition
from tailor_core.consent_client import ServiceToken
from tailor_core.server import ServiceBinding
from tailor_profile import privacy_handlers
from tailor_profile.adapters.keys import DecryptionKeys
from tailor_profile.entrypoints.grpc import ProfileServicer
from tailor_profile.jobs import BatchJobs
from tailor_profile.partitions import PartitionOwner
from tailor_profile.projection import ProfileProjection
from tailor_profile.reads import ProfileReader
from tailor_profile.rebuild import Rebuilder
from tailor_profile.settings import ProfileSettings


async def build(context: ServiceContext) -> Components:
    """Build the profile service's gRPC service, projection, jobs and privacy handlers."""
    settings = context.settings
    assert isinstance(settings, ProfileSettings)
    schema, currency = settings.db_schema, settings.reporting_currency
    keys = DecryptionKeys(
        settings.consent_addr,
        ServiceToken(settings.token_secret.get_secret_value(), "profile", SERVICE_SCOPES),
    )
    projection = ProfileProjection(naming=context.naming, schema=schema, currency=currency)
    owner = PartitionOwner(
        pool=context.pool,
        js=context.js,
        naming=context.naming,
        schema=schema,
        projection=projection,
        heartbeat_seconds=settings.partition_heartbeat_seconds,
        batch_size=settings.projection_batch,
    )
    jobs = BatchJobs(
        context.pool,
        context.naming,
        schema,
        currency,
        interval_seconds=settings.batch_interval_seconds,
        clock_seconds=settings.window_clock_seconds,
    )
    rebuilder = Rebuilder(context.pool, context.js, context.naming, schema, currency)
    reader = ProfileReader(context.pool, context.consent, keys, currency)
    return Components(
        services=[
            ServiceBinding(
                profile_pb2_grpc.add_ProfileServiceServicer_to_server,
                ProfileServicer(context.pool, reader, projection, jobs, rebuilder),
                "tailor.profile.v1.ProfileService",
            ),
        ],
        background=[owner, jobs],
        on_shutdown=[rebuilder.stop, keys.close],
        privacy=privacy_handlers.handlers(reader, schema),
    )


DEFINITION = ServiceDefinition(
    name="profile",
    migrations_package="tailor_profile.migrations",
    build=build,
    settings_class=ProfileSettings,
)
