"""A group of real services for a test module: started in their own schema and stream
namespace, with the calls every cross-service test makes (credentials, consent decisions,
sending events through ingest), and everything removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from nats.aio.client import Client as NatsClient

from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup, ServiceProcess

Metadata = tuple[tuple[str, str], ...]
TEST_SECRET = "t" * 40


def bearer(*scopes: str, kind: str = "compliance", secret: str = TEST_SECRET) -> Metadata:
    """Authorization metadata of a caller with ``scopes`` (staff by default)."""
    token = mint_token(secret, "staff-1", kind, list(scopes))  # type: ignore[arg-type]
    return (("authorization", f"Bearer {token}"),)


@dataclass
class RunningPlatform:
    """Services running as processes, plus direct connections to their Postgres and NATS."""

    group: ServiceGroup
    naming: Naming
    pg: asyncpg.Connection
    nc: NatsClient
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    _api_key: Metadata = ()

    def service(self, name: str) -> ServiceProcess:
        return self.group.services[name]

    def channel(self, name: str) -> grpc.aio.Channel:
        """A channel to service ``name``, closed when the platform stops."""
        channel = grpc.aio.insecure_channel(self.service(name).address)
        self.channels.append(channel)
        return channel

    async def _record(self, rpc: str, subject: str, purposes: Sequence[str]) -> None:
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel("consent"))
        request_type = {
            "GrantConsent": consent_pb2.GrantConsentRequest,
            "WithdrawConsent": consent_pb2.WithdrawConsentRequest,
        }[rpc]
        await getattr(stub, rpc)(
            request_type(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=bearer("consent:write"),
        )

    async def grant(self, subject: str, *purposes: str) -> None:
        await self._record("GrantConsent", subject, purposes)

    async def withdraw(self, subject: str, *purposes: str) -> None:
        await self._record("WithdrawConsent", subject, purposes)

    async def api_key(self) -> Metadata:
        """x-api-key metadata of a source created once for this platform."""
        if not self._api_key:
            created = await admin_pb2_grpc.IngestAdminServiceStub(
                self.channel("ingest")
            ).CreateApiKey(
                admin_pb2.CreateApiKeyRequest(source_id="app"), metadata=bearer("ingest:admin")
            )
            self._api_key = (("x-api-key", created.secret),)
        return self._api_key

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        """Send through ingest's Batch RPC (the caller checks the outcomes)."""
        reply: ingest_pb2.BatchResponse = await ingest_pb2_grpc.IngestServiceStub(
            self.channel("ingest")
        ).Batch(ingest_pb2.BatchRequest(events=list(events)), metadata=await self.api_key())
        return reply


@asynccontextmanager
async def running_platform(
    infra: Infra,
    log_dir: Path,
    names: Sequence[str],
    *,
    env: Mapping[str, Mapping[str, str]] | None = None,
    prefix: str = "pl",
    kind: type[RunningPlatform] = RunningPlatform,
) -> AsyncIterator[RunningPlatform]:
    """Start ``names`` (consent first) with per-service ``env``; stop and remove everything
    they made (schemas, streams) on the way out. ``kind`` is a service's own subclass with
    the calls its tests make (narrow with ``isinstance``)."""
    group = ServiceGroup(infra, unique_name(prefix), TEST_SECRET, log_dir, names=names)
    for name, extra in (env or {}).items():
        group.services[name].extra_env.update(extra)
    await group.start()
    naming = Naming(group.namespace, 4)
    pg = await asyncpg.connect(infra.pg_dsn)
    nc = await connect(infra.nats_url, name=f"{prefix}-tests")
    running = kind(group, naming, pg, nc)
    try:
        yield running
    finally:
        for channel in running.channels:
            await channel.close()
        await group.stop()
        with contextlib.suppress(Exception):  # a chaos test may have restarted Postgres
            await pg.close()
        try:
            await asyncio.wait_for(
                delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)]), 10
            )
            await asyncio.wait_for(nc.drain(), 10)
        finally:
            # Whatever happened to NATS (a chaos test stops it), no client of this platform
            # may outlive it, reconnecting and logging into the next tests' output.
            await nc.close()
            await group.drop_schemas()
