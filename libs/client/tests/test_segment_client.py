"""SegmentClient and AsyncSegmentClient against real consent, ingest, profile and segment
processes: a segment from a text rule round-trips with its membership, a refused rule
raises InvalidArgument pointing at ``rule.text``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.segment.v1 import segment_pb2
from tailor_client import AsyncSegmentClient, SegmentClient, customer_event
from tailor_client.errors import AlreadyExists, InvalidArgument, NotFound
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until

from .conftest import token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITER = token("segment:read", "segment:write")
VIEWED_HEART = 'event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h'


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("segment-client-logs"),
        ("consent", "ingest", "profile", "segment"),
        env={"segment": {"TAILOR_CLOCK_SECONDS": "0.1"}},
        prefix="cs",
    ) as running:
        yield running


async def test_a_segment_from_a_text_rule_round_trips_with_its_members(
    platform: RunningPlatform,
) -> None:
    viewer = unique_name("viewer")
    await platform.grant(viewer, "analytics", "marketing")
    async with AsyncSegmentClient(platform.service("segment").address, WRITER) as segments:
        created = await segments.create_segment("viewed-heart", rule=VIEWED_HEART)
        assert (created.version, created.name, created.purpose) == (1, "viewed-heart", "marketing")
        viewed = customer_event(
            user_id=viewer,
            track=events_pb2.Track(
                event="Product Viewed",
                product=events_pb2.ProductEvent(product=events_pb2.Product(product_id="85123A")),
            ),
        )
        reply = await platform.send(viewed)
        assert reply.results[0].outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED

        async def entered() -> bool:
            return (await segments.is_member("viewed-heart", viewer)).member

        await wait_until(entered, timeout=20, message="the viewer entered")
        members = await segments.list_members("viewed-heart")
        mine = await segments.list_subject_segments(viewer)
        checked = await segments.validate_rule(VIEWED_HEART)
        updated = await segments.update_segment(
            "viewed-heart", expected_version=1, description="viewed the heart holder"
        )
        versions = await segments.list_segment_versions("viewed-heart")
        with pytest.raises(AlreadyExists):
            await segments.create_segment("viewed-heart", rule=VIEWED_HEART)
    assert [m.subject_id for m in members.members] == [viewer]
    assert [m.segment_id for m in mine] == ["viewed-heart"]
    assert checked.valid
    assert checked.rule_text
    assert updated.version == 2
    assert [v.version for v in versions.versions] == [2, 1]

    def blocking() -> tuple[segment_pb2.Segment, int]:
        with SegmentClient(platform.service("segment").address, WRITER) as client:
            return client.get_segment("viewed-heart", version=1), client.delete_segment(
                "viewed-heart"
            )

    first, exited = await asyncio.to_thread(blocking)
    assert (first.version, first.description) == (1, "")
    assert exited == 1


async def test_a_refused_rule_raises_invalid_argument_at_rule_text(
    platform: RunningPlatform,
) -> None:
    async with AsyncSegmentClient(platform.service("segment").address, WRITER) as segments:
        with pytest.raises(InvalidArgument) as refused:
            await segments.create_segment("broken", rule='event "Product Viewed" count >= ')
        problems = await segments.validate_rule('event "Product Viewed" count >= ')
        with pytest.raises(NotFound):
            await segments.get_segment("broken")
    violation = refused.value.violation("rule.text")
    assert violation is not None, refused.value.violations
    line, column, _ = violation.description.split(":", 2)
    assert (int(line), int(column)) == (1, problems.problems[0].column)
    assert not problems.valid
