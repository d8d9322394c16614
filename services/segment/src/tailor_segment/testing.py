"""Consent, ingest, profile and segment as real processes, for tests:
creating segments from the text rule form and asking about members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_core.testing.waiting import wait_until

STAFF = bearer("ingest:admin")
WRITER = bearer("segment:write", "segment:read")
READER = bearer("segment:read", kind="service")


class SegmentPlatform(RunningPlatform):
    """The running services, with what segment's tests ask of them."""

    @property
    def schema(self) -> str:
        return self.service("segment").schema

    def segments(self) -> segment_pb2_grpc.SegmentServiceStub:
        return segment_pb2_grpc.SegmentServiceStub(self.channel("segment"))

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        """Send through ingest; every event must be accepted."""
        reply = await super().send(*events)
        assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results), reply
        return reply

    async def create(self, segment_id: str, text: str, purpose: str = "") -> segment_pb2.Segment:
        """Create from the text form and wait until the backfill is done."""
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

    async def membership(self, segment_id: str, subject: str) -> segment_pb2.IsMemberResponse:
        reply: segment_pb2.IsMemberResponse = await self.segments().IsMember(
            segment_pb2.IsMemberRequest(segment_id=segment_id, subject_id=subject),
            metadata=READER,
        )
        return reply

    async def is_member(self, segment_id: str, subject: str) -> bool:
        return bool((await self.membership(segment_id, subject)).member)


@asynccontextmanager
async def segment_platform(infra: Infra, log_dir: Path) -> AsyncIterator[SegmentPlatform]:
    """The four services a segment needs, with a fast membership clock."""
    async with running_platform(
        infra,
        log_dir,
        ("consent", "ingest", "profile", "segment"),
        env={"segment": {"TAILOR_CLOCK_SECONDS": "0.1"}},
        prefix="sg",
        kind=SegmentPlatform,
    ) as running:
        assert isinstance(running, SegmentPlatform)
        yield running


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
