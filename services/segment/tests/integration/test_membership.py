"""Real-time membership through the whole pipeline (ingest → EVENTS / PROFILE → segment):
entries on events, clock-driven exits and sequence timeouts, profile traits, segment
references, consent withdrawal, and the SEGMENT stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from tailor.events.v1 import events_pb2
from tailor.events.v1 import platform_events_pb2 as platform_events
from tailor.segment.v1 import segment_pb2
from tailor_core.envelopes import parse
from tailor_core.streams import Stream, subject_token
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.waiting import wait_until
from tailor_ingest.testing import order_event
from tailor_segment.testing import READER, WRITER, SegmentPlatform, event, segment_platform, viewed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.embedded_smoke]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SegmentPlatform]:
    async with segment_platform(infra, tmp_path_factory.mktemp("segment-logs")) as running:
        yield running


R = platform_events.MembershipChangeReason


async def _member(
    platform: SegmentPlatform, segment_id: str, subject: str, want: bool = True
) -> None:
    async def holds() -> bool:
        return await platform.is_member(segment_id, subject) == want

    await wait_until(
        holds, timeout=15, message=f"{subject} {'in' if want else 'out of'} {segment_id}"
    )


async def test_a_view_enters_the_segment_and_the_entry_is_announced(
    platform: SegmentPlatform,
) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics", "marketing")
    await platform.create(
        "viewed-heart",
        'event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h',
    )
    js = platform.nc.jetstream()
    watcher = await js.subscribe(
        f"{platform.naming.root(Stream.SEGMENT)}.viewed-heart.{subject_token(user)}.*",
        ordered_consumer=True,
    )
    await platform.send(viewed(user, "71053"))  # another product: no entry
    await platform.send(viewed(user, "85123A"))
    await _member(platform, "viewed-heart", user)
    reply = await platform.membership("viewed-heart", user)
    assert reply.membership.reason == R.MEMBERSHIP_CHANGE_REASON_RULE_MATCHED
    assert "Product Viewed" in reply.membership.explanation
    message = await watcher.next_msg(timeout=10)
    entered = parse(message.data).segment_entered
    assert (entered.segment_id, entered.subject_id, entered.purpose) == (
        "viewed-heart",
        user,
        "marketing",
    )
    assert user not in message.subject  # the subject travels as a token
    await watcher.unsubscribe()


async def test_members_leave_when_the_window_expires_without_a_new_event(
    platform: SegmentPlatform,
) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics", "marketing")
    await platform.create("recent-viewer", 'event "Product Viewed" within 3s')
    await platform.send(viewed(user, "22423"))
    await _member(platform, "recent-viewer", user)
    started = time.monotonic()
    await _member(platform, "recent-viewer", user, want=False)
    assert time.monotonic() - started < 10
    rows = await platform.pg.fetch(
        f'SELECT * FROM "{platform.schema}".evaluations_due WHERE subject_id = $1', user
    )
    assert [r["segment_id"] for r in rows if r["segment_id"] == "recent-viewer"] == []


async def test_an_abandoned_cart_enters_when_time_runs_out_and_leaves_on_the_order(
    platform: SegmentPlatform,
) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics", "marketing")
    await platform.create(
        "abandoned-cart", 'sequence "Product Added" then not "Order Completed" within 2s'
    )
    added = event(
        user_id=user,
        track=events_pb2.Track(
            event="Product Added",
            product=events_pb2.ProductEvent(product=events_pb2.Product(product_id="84029G")),
        ),
    )
    await platform.send(added)
    assert not await platform.is_member("abandoned-cart", user)
    await _member(platform, "abandoned-cart", user)
    await platform.send(order_event(user, unique_name("o"), message_id=unique_name("m")))
    await _member(platform, "abandoned-cart", user, want=False)


async def test_trait_rules_follow_profile_changes_and_refer_to_other_segments(
    platform: SegmentPlatform,
) -> None:
    loyal, viewer = unique_name("loyal"), unique_name("u")
    for subject in (loyal, viewer):
        await platform.grant(subject, "analytics", "marketing")
    await platform.create("window-shoppers", 'event "Product Viewed" count >= 1')
    await platform.create(
        "loyal-buyers", 'trait computed.orders_lifetime >= 3 and not in segment "window-shoppers"'
    )
    for n in range(3):
        await platform.send(order_event(loyal, f"{loyal}-{n}", message_id=unique_name("m")))
        await platform.send(order_event(viewer, f"{viewer}-{n}", message_id=unique_name("m")))
    await platform.send(viewed(viewer, "85123A"))
    await _member(platform, "loyal-buyers", loyal)
    await _member(platform, "window-shoppers", viewer)
    assert not await platform.is_member("loyal-buyers", viewer)
    stub = platform.segments()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteSegment(
            segment_pb2.DeleteSegmentRequest(segment_id="window-shoppers"), metadata=WRITER
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "loyal-buyers" in (refused.value.details() or "")
    listed = await stub.ListSubjectSegments(
        segment_pb2.ListSubjectSegmentsRequest(subject_id=loyal), metadata=READER
    )
    assert [m.segment_id for m in listed.memberships] == ["loyal-buyers"]


async def test_a_withdrawal_removes_membership_within_a_second(platform: SegmentPlatform) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics", "marketing")
    await platform.create("any-viewer", 'event "Product Viewed"')
    await platform.send(viewed(user, "85099B"))
    await _member(platform, "any-viewer", user)
    await platform.withdraw(user, "marketing")

    async def gone() -> bool:
        return not await platform.is_member("any-viewer", user)

    took = await wait_until(gone, timeout=1.0, message="membership removed after withdrawal")
    assert took < 1.0
    exits = await platform.nc.jetstream().subscribe(
        f"{platform.naming.root(Stream.SEGMENT)}.any-viewer.{subject_token(user)}.exited",
        ordered_consumer=True,
    )
    exited = parse((await exits.next_msg(timeout=10)).data).segment_exited
    assert exited.reason == R.MEMBERSHIP_CHANGE_REASON_CONSENT_WITHDRAWN
    await exits.unsubscribe()
    # Granting again brings the subject back, saying why.
    await platform.grant(user, "marketing")
    await _member(platform, "any-viewer", user)
    again = await platform.membership("any-viewer", user)
    assert again.membership.reason == R.MEMBERSHIP_CHANGE_REASON_CONSENT_GRANTED


async def test_a_merged_anonymous_visitor_s_membership_moves_to_the_profile(
    platform: SegmentPlatform,
) -> None:
    user, anon = unique_name("u"), unique_name("anon")
    for subject in (user, anon):
        await platform.grant(subject, "analytics", "marketing")
    await platform.create(
        "heart-viewers", 'event "Product Viewed" where product.product_id = "85123A"'
    )
    visit = event(
        anonymous_id=anon,
        track=events_pb2.Track(
            event="Product Viewed",
            product=events_pb2.ProductEvent(product=events_pb2.Product(product_id="85123A")),
        ),
    )
    await platform.send(visit)
    await _member(platform, "heart-viewers", anon)
    await platform.send(event(user_id=user, anonymous_id=anon, identify=events_pb2.Identify()))

    async def moved() -> bool:
        rows = await platform.pg.fetch(
            f'SELECT subject_id FROM "{platform.schema}".memberships WHERE segment_id = $1 '
            "AND subject_id = ANY($2::text[])",
            "heart-viewers",
            [user, anon],
        )
        return [r["subject_id"] for r in rows] == [user]

    await wait_until(moved, timeout=15, message="membership moved to the surviving profile")
    reply = await platform.membership("heart-viewers", anon)  # any id of the person
    assert reply.membership.subject_id == user
    assert reply.membership.reason == R.MEMBERSHIP_CHANGE_REASON_PROFILES_MERGED
