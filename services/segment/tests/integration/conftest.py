"""Consent, ingest, profile and segment as real processes, shared by a module's tests:
sending events, granting and withdrawing consent, reading the SEGMENT stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from nats.aio.client import Client as NatsClient

from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup
from tailor_core.testing.waiting import wait_until

SECRET = "s" * 40
Metadata = tuple[tuple[str, str], ...]


def bearer(*scopes: str, kind: str = "compliance") -> Metadata:
    return (("authorization", f"Bearer {mint_token(SECRET, 'staff-1', kind, list(scopes))}"),)  # type: ignore[arg-type]


STAFF = bearer("ingest:admin")
OFFICER = bearer("consent:write")
WRITER = bearer("segment:write", "segment:read")
READER = bearer("segment:read", kind="service")


@dataclass
class Platform:
    group: ServiceGroup
    naming: Naming
    pg: asyncpg.Connection
    nc: NatsClient
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    _key: Metadata = ()

    @property
    def schema(self) -> str:
        return self.group.services["segment"].schema

    def _channel(self, name: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.group.services[name].address)
        self.channels.append(channel)
        return channel

    def segments(self) -> segment_pb2_grpc.SegmentServiceStub:
        return segment_pb2_grpc.SegmentServiceStub(self._channel("segment"))

    def consent(self) -> consent_pb2_grpc.ConsentServiceStub:
        return consent_pb2_grpc.ConsentServiceStub(self._channel("consent"))

    async def grant(self, subject: str, *purposes: str) -> None:
        await self.consent().GrantConsent(
            consent_pb2.GrantConsentRequest(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=OFFICER,
        )

    async def withdraw(self, subject: str, *purposes: str) -> None:
        await self.consent().WithdrawConsent(
            consent_pb2.WithdrawConsentRequest(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=OFFICER,
        )

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        if not self._key:
            created = await admin_pb2_grpc.IngestAdminServiceStub(
                self._channel("ingest")
            ).CreateApiKey(admin_pb2.CreateApiKeyRequest(source_id="app"), metadata=STAFF)
            self._key = (("x-api-key", created.secret),)
        reply: ingest_pb2.BatchResponse = await ingest_pb2_grpc.IngestServiceStub(
            self._channel("ingest")
        ).Batch(ingest_pb2.BatchRequest(events=list(events)), metadata=self._key)
        assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results), reply
        return reply

    async def create(self, segment_id: str, text: str, purpose: str = "") -> segment_pb2.Segment:
        reply = await self.segments().CreateSegment(
            segment_pb2.CreateSegmentRequest(
                segment_id=segment_id,
                name=segment_id,
                rule=segment_pb2.RuleInput(text=text),
                purpose=purpose,
            ),
            metadata=WRITER,
        )
        await self.wait_active(segment_id)
        created: segment_pb2.Segment = reply.segment
        return created

    async def wait_active(self, segment_id: str) -> None:
        async def active() -> bool:
            reply = await self.segments().GetSegment(
                segment_pb2.GetSegmentRequest(segment_id=segment_id), metadata=READER
            )
            return bool(reply.segment.state == segment_pb2.SEGMENT_STATE_ACTIVE)

        await wait_until(active, timeout=30, message=f"{segment_id} backfilled")

    async def is_member(self, segment_id: str, subject: str) -> bool:
        reply = await self.segments().IsMember(
            segment_pb2.IsMemberRequest(segment_id=segment_id, subject_id=subject),
            metadata=READER,
        )
        return bool(reply.member)

    async def membership(self, segment_id: str, subject: str) -> segment_pb2.IsMemberResponse:
        reply: segment_pb2.IsMemberResponse = await self.segments().IsMember(
            segment_pb2.IsMemberRequest(segment_id=segment_id, subject_id=subject),
            metadata=READER,
        )
        return reply


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    group = ServiceGroup(
        infra,
        unique_name("sg"),
        SECRET,
        tmp_path_factory.mktemp("segment-logs"),
        names=("consent", "ingest", "profile", "segment"),
    )
    group.services["segment"].extra_env["TAILOR_CLOCK_SECONDS"] = "0.1"
    await group.start()
    naming = Naming(group.namespace, 4)
    pg = await asyncpg.connect(infra.pg_dsn)
    nc = await connect(infra.nats_url, name="segment-tests")
    found = Platform(group, naming, pg, nc)
    try:
        yield found
    finally:
        for channel in found.channels:
            await channel.close()
        await group.stop()
        await pg.close()
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])
        await nc.drain()
        await group.drop_schemas()


def event(**fields: Any) -> events_pb2.CustomerEvent:
    """A customer event stamped now, with a fresh message id."""
    found = events_pb2.CustomerEvent(message_id=unique_name("m"), **fields)
    found.timestamp.FromDatetime(datetime.now(UTC))
    return found


def viewed(subject: str, product_id: str) -> events_pb2.CustomerEvent:
    return event(
        user_id=subject,
        track=events_pb2.Track(
            event="Product Viewed",
            product=events_pb2.ProductEvent(product=events_pb2.Product(product_id=product_id)),
        ),
    )
