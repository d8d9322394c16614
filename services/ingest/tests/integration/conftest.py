"""A consent and an ingest service as real processes, shared by a module's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.embedded import free_port
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup, ServiceProcess

SECRET = "i" * 40
Metadata = tuple[tuple[str, str], ...]


def bearer(*scopes: str, sub: str = "staff-1", kind: str = "compliance") -> Metadata:
    return (("authorization", f"Bearer {mint_token(SECRET, sub, kind, scopes)}"),)  # type: ignore[arg-type]


STAFF = bearer("ingest:admin")
OFFICER = bearer("consent:write")


@dataclass
class Platform:
    consent: ServiceProcess
    ingest: ServiceProcess
    naming: Naming
    nc: NatsClient
    js: JetStreamContext
    log_dir: Path
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def http_base(self) -> str:
        """Base URL of ingest's Segment-compatible HTTP intake."""
        return f"http://127.0.0.1:{self.ingest.extra_env['TAILOR_HTTP_PORT']}"

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.ingest.address)
        self.channels.append(channel)
        return channel

    def ingest_stub(self) -> ingest_pb2_grpc.IngestServiceStub:
        return ingest_pb2_grpc.IngestServiceStub(self.channel())

    def admin_stub(self) -> admin_pb2_grpc.IngestAdminServiceStub:
        return admin_pb2_grpc.IngestAdminServiceStub(self.channel())

    async def api_key(self, source: str | None = None, **fields: object) -> tuple[Metadata, str]:
        """A new key for a (new) source: its x-api-key metadata and the source id."""
        source = source or unique_name("src-")
        created = await self.admin_stub().CreateApiKey(
            admin_pb2.CreateApiKeyRequest(source_id=source, **fields),  # type: ignore[arg-type]
            metadata=STAFF,
        )
        return (("x-api-key", created.secret),), source

    async def grant(self, subject: str, purpose: str) -> None:
        async with grpc.aio.insecure_channel(self.consent.address) as channel:
            await consent_pb2_grpc.ConsentServiceStub(channel).GrantConsent(
                consent_pb2.GrantConsentRequest(
                    subject_id=subject,
                    purposes=[purpose],
                    metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
                ),
                metadata=OFFICER,
            )

    async def restart_ingest(self, env: dict[str, str] | None = None) -> None:
        self.ingest.stop()
        self.ingest.extra_env.update(env or {})
        await self.ingest.start()


PlatformFactory = Callable[..., Platform]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    group = ServiceGroup(
        infra,
        unique_name("i"),
        SECRET,
        tmp_path_factory.mktemp("ingest-logs"),
        names=("consent", "ingest"),
    )
    ingest = group.services["ingest"]
    ingest.extra_env["TAILOR_MAX_INFLIGHT_EVENTS"] = "1000"
    ingest.extra_env["TAILOR_HTTP_PORT"] = str(free_port())
    await group.start()
    nc = await connect(infra.nats_url, name="ingest-tests")
    naming = Naming(group.namespace, 4)
    found = Platform(group.consent, ingest, naming, nc, nc.jetstream(), ingest.log_path.parent)
    try:
        yield found
    finally:
        for channel in found.channels:
            await channel.close()
        await group.stop()
        await delete_streams(found.js, [s.name for s in platform_streams(naming)])
        await nc.drain()
        await group.drop_schemas()
