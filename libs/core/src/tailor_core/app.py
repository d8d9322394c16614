"""The one place that assembles a service: settings, logs, Postgres, NATS, gRPC, shutdown.

A service describes itself with a :class:`ServiceDefinition` (its name, its migrations,
a function building its gRPC servicers and consumers from a :class:`ServiceContext`) and
calls :func:`main`. Everything else — migrations under a lock, stream provisioning, the
outbox relay, health, reflection, metrics, SIGTERM handling — is the same for all five.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from tailor_core.auth import ApiKeyVerifier, BearerTokenAuthenticator, TokenVerifier
from tailor_core.bus import connect, platform_streams, provision_streams
from tailor_core.consent_client import ConsentClient, ServiceToken
from tailor_core.db import create_pool
from tailor_core.inbox import InboxConsumer
from tailor_core.lifecycle import ServiceRuntime
from tailor_core.logs import configure_logging
from tailor_core.metrics import start_metrics_server
from tailor_core.migrations import core_migrations, load_migrations, migrate
from tailor_core.outbox import OutboxRelay
from tailor_core.privacy import PrivacyHandlers, privacy_consumer
from tailor_core.server import ServiceBinding, build_server
from tailor_core.settings import ServiceSettings, SettingsError, load_settings
from tailor_core.streams import Naming

log = structlog.get_logger(__name__)

#: What a service's own token allows it to ask of other services.
SERVICE_SCOPES = ["consent:check", "keys:encrypt", "keys:request", "privacy:report"]


@dataclass
class ServiceContext:
    """What a service's composition root gets to build its handlers from."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    nats: NatsClient
    js: JetStreamContext
    naming: Naming
    relay: OutboxRelay
    consent: ConsentClient


class BackgroundLoop(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Components:
    """What a service contributes: its gRPC services, consumers and background tasks."""

    services: Sequence[ServiceBinding]
    consumers: Sequence[InboxConsumer] = ()
    #: Long-running loops (``run()`` until ``stop()``), stopped before the shutdown hooks run.
    background: Sequence[BackgroundLoop] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    #: Export and erase handlers for data-subject requests (every service registers them).
    privacy: PrivacyHandlers | None = None
    #: Verifies ``x-api-key`` credentials of client apps (ingest); None = tokens only.
    api_keys: ApiKeyVerifier | None = None


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    migrations_package: str
    build: Callable[[ServiceContext], Awaitable[Components]]
    settings_class: type[ServiceSettings] = ServiceSettings
    extra: dict[str, Any] = field(default_factory=dict)


async def run(definition: ServiceDefinition, settings: ServiceSettings) -> int:
    """Start the service, serve until SIGTERM/SIGINT, shut down in order; return an exit code."""
    naming = Naming(settings.namespace, settings.partitions)
    runtime = ServiceRuntime(grace_seconds=settings.shutdown_grace_seconds)

    pool = await create_pool(
        settings.pg_dsn.get_secret_value(),
        settings.db_schema,
        application_name=f"tailor-{definition.name}",
        max_size=settings.pg_pool_max,
    )
    runtime.on_shutdown(pool.close)
    await apply_migrations(definition, settings, pool)

    nc = await connect(settings.nats_url, name=f"tailor-{definition.name}")
    runtime.on_shutdown(nc.drain)
    warn_if_nats_too_old(nc.connected_server_version.major, nc.connected_server_version.minor)
    js = nc.jetstream()
    provisioned = await provision_streams(
        js, platform_streams(naming, replicas=settings.stream_replicas)
    )
    log.info("streams provisioned", **{name: str(action) for name, action in provisioned.items()})

    relay = OutboxRelay(pool, js, settings.db_schema)
    consent = ConsentClient(
        nats=nc,
        naming=naming,
        consent_addr=settings.consent_addr,
        token=ServiceToken(
            settings.token_secret.get_secret_value(), definition.name, SERVICE_SCOPES
        ),
    )
    await consent.start()
    runtime.on_shutdown(consent.close)
    context = ServiceContext(settings, pool, nc, js, naming, relay, consent)
    components = await definition.build(context)

    server = build_server(
        service_name=definition.name,
        services=components.services,
        authenticator=BearerTokenAuthenticator(
            TokenVerifier(settings.token_secret.get_secret_value()), components.api_keys
        ),
        host=settings.grpc_host,
        port=settings.grpc_port,
    )
    metrics = start_metrics_server(settings.metrics_port)
    runtime.on_shutdown(metrics.stop)
    for hook in components.on_shutdown:
        runtime.on_shutdown(hook)

    runtime.background(relay.run, stop=relay.stop)
    consumers = list(components.consumers)
    if components.privacy is not None:
        consumers.append(
            privacy_consumer(pool=pool, js=js, naming=naming, handlers=components.privacy)
        )
    for consumer in consumers:
        runtime.background(consumer.run, stop=consumer.stop)
    for loop in components.background:
        runtime.background(loop.run, stop=loop.stop)

    await server.start()
    runtime.serve(server)
    await server.set_serving()
    log.info("serving", grpc_port=server.port, metrics_port=settings.metrics_port)
    return await runtime.wait()


async def apply_migrations(
    definition: ServiceDefinition, settings: ServiceSettings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        applied = await migrate(
            conn,
            settings.db_schema,
            [*core_migrations(), *load_migrations(definition.name, definition.migrations_package)],
        )
    log.info("migrations applied", count=len(applied), schema=settings.db_schema)


async def migrate_only(definition: ServiceDefinition, settings: ServiceSettings) -> int:
    """Apply the service's migrations and return (a Kubernetes init container or Job)."""
    pool = await create_pool(
        settings.pg_dsn.get_secret_value(),
        settings.db_schema,
        application_name=f"tailor-{definition.name}-migrate",
        max_size=1,
    )
    try:
        await apply_migrations(definition, settings, pool)
    finally:
        await pool.close()
    return 0


def warn_if_nats_too_old(major: int, minor: int) -> None:
    """Erasure purges streams by subject; before 2.10 such a purge disturbs other consumers."""
    if (major, minor) < (2, 10):
        log.warning(
            "nats-server older than 2.10: purging a subject's messages (erasure) can make "
            "consumers of that stream skip other messages; upgrade NATS",
            server_version=f"{major}.{minor}",
        )


def main(definition: ServiceDefinition) -> None:
    """Console-script entry point of a service: ``tailor-<name>`` serves,
    ``tailor-<name> migrate`` only applies its migrations and exits."""
    command = sys.argv[1:2]
    if command not in ([], ["migrate"]):
        print(f"usage: tailor-{definition.name} [migrate]", file=sys.stderr)
        raise SystemExit(2)
    try:
        settings = load_settings(definition.name, definition.settings_class)
    except SettingsError as exc:
        print(f"tailor-{definition.name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(definition.name, settings.log_level)
    if command == ["migrate"]:
        raise SystemExit(asyncio.run(migrate_only(definition, settings)))
    raise SystemExit(asyncio.run(run(definition, settings)))
