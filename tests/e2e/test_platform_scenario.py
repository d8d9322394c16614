"""The whole platform on the real-data sample, through the public gRPC APIs only, the five
services running as separate processes: the import; profiles, segments and recommendations
that match figures computed from the file alone; a consent withdrawal that stops
personalization and segment membership within a second; an export from every service; an
erasure that leaves no trace of the person anywhere."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from tailor.common.v1 import common_pb2
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor.profile.v1 import profile_pb2, profile_pb2_grpc
from tailor.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_cli.importing import uci
from tailor_cli.importing.command import import_file
from tailor_core.settings import SERVICE_NAMES
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_core.testing.traces import rows_naming
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[2] / "data/uci-online-retail/sample.csv.gz"
PRODUCT = "85123A"
STAFF = bearer("ingest:admin")
OFFICER = bearer("privacy:admin", "consent:write")
PROFILES = bearer("profile:read", kind="service")
SEGMENTS = bearer("segment:write", "segment:read")
RECOMMEND = bearer("recommend:read", "recommend:admin")
PURPOSES = ("personalization", "marketing")


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("scenario-logs"),
        SERVICE_NAMES,
        env={
            "segment": {"TAILOR_CLOCK_SECONDS": "0.1"},
            "recommend": {"TAILOR_FOLLOW_SECONDS": "0.1"},
        },
        prefix="sc",
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def customers(platform: RunningPlatform) -> list[str]:
    """The sample imported through ingest's public API, every named customer consenting to
    personalization and marketing, and every service caught up."""
    summary, _ = await import_file(
        SAMPLE, ingest_addr=platform.service("ingest").address, admin=STAFF
    )
    assert summary.outcomes["accepted"].events > 0
    named = sorted(uci.customer_totals(SAMPLE).keys() - {s for s in _guests()})
    for subject in named:
        await platform.grant(subject, *PURPOSES)
    profiles = profile_pb2_grpc.ProfileServiceStub(platform.channel("profile"))
    last = named[-1]
    expected_orders = uci.customer_totals(SAMPLE)[last].orders

    async def caught_up() -> bool:
        try:
            reply = await profiles.GetProfile(
                profile_pb2.GetProfileRequest(subject_id=last, purpose="personalization"),
                metadata=PROFILES,
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.profile.computed.orders_lifetime == expected_orders)

    await wait_until(caught_up, timeout=120, message="profiles caught up")
    return named


def _guests() -> set[str]:
    return {e.anonymous_id for e in uci.accepted_events(SAMPLE) if e.anonymous_id}


async def test_profiles_match_the_file(platform: RunningPlatform, customers: list[str]) -> None:
    stub = profile_pb2_grpc.ProfileServiceStub(platform.channel("profile"))
    totals = uci.customer_totals(SAMPLE)
    for subject in customers:
        reply = await stub.GetProfile(
            profile_pb2.GetProfileRequest(subject_id=subject, purpose="personalization"),
            metadata=PROFILES,
        )
        computed = reply.profile.computed
        expected = totals[subject]
        assert computed.orders_lifetime == expected.orders, subject
        assert computed.refunds_lifetime == expected.refunds, subject
        assert Decimal(computed.revenue_lifetime.amount) == expected.revenue, subject


async def test_segments_match_the_file(platform: RunningPlatform, customers: list[str]) -> None:
    stub = segment_pb2_grpc.SegmentServiceStub(platform.channel("segment"))
    await stub.CreateSegment(
        segment_pb2.CreateSegmentRequest(
            segment_id="bought-heart",
            name="Bought the heart holder",
            rule=segment_pb2.RuleInput(
                text=f'event "Order Completed" where product.product_id = "{PRODUCT}"'
            ),
        ),
        metadata=SEGMENTS,
    )
    expected = {
        e.user_id
        for e in uci.accepted_events(SAMPLE)
        if e.user_id
        and e.track.event == "Order Completed"
        and any(p.product_id == PRODUCT for p in e.track.order.products)
    }
    assert expected

    async def members() -> set[str]:
        reply = await stub.ListMembers(
            segment_pb2.ListMembersRequest(
                segment_id="bought-heart", page=common_pb2.PageRequest(page_size=1000)
            ),
            metadata=SEGMENTS,
        )
        return {m.subject_id for m in reply.members}

    async def backfilled() -> bool:
        return await members() == expected

    await wait_until(backfilled, timeout=60, message="segment members match the file")


async def test_recommendations_follow_the_file(
    platform: RunningPlatform, customers: list[str]
) -> None:
    stub = recommend_pb2_grpc.RecommendServiceStub(platform.channel("recommend"))
    bought: dict[str, set[str]] = defaultdict(set)
    for event in uci.accepted_events(SAMPLE):
        if event.track.event == "Order Completed":
            items = {p.product_id for p in event.track.order.products}
            bought[event.user_id or event.anonymous_id] |= items
    # Co-occurrence is per person: what the product's buyers bought, at any time.
    together = {i for items in bought.values() if PRODUCT in items for i in items} - {PRODUCT}
    similar = await stub.SimilarItems(
        recommend_pb2.SimilarItemsRequest(item_id=PRODUCT, k=5), metadata=RECOMMEND
    )
    assert similar.item_known
    assert {i.item_id for i in similar.items} <= set(together)
    buyer = next(s for s in customers if PRODUCT in bought[s])
    mine = await stub.Recommend(
        recommend_pb2.RecommendRequest(
            subject_id=buyer, k=10, filters=recommend_pb2.Filters(exclude_purchased=True)
        ),
        metadata=RECOMMEND,
    )
    assert mine.personalized
    assert len(mine.items) == 10
    assert not {i.item_id for i in mine.items} & bought[buyer]
    assert all(i.reasons for i in mine.items)


async def test_a_withdrawal_stops_personalization_and_membership_within_a_second(
    platform: RunningPlatform, customers: list[str]
) -> None:
    segments = segment_pb2_grpc.SegmentServiceStub(platform.channel("segment"))
    recommend = recommend_pb2_grpc.RecommendServiceStub(platform.channel("recommend"))
    member = None
    for subject in customers:
        reply = await segments.IsMember(
            segment_pb2.IsMemberRequest(segment_id="bought-heart", subject_id=subject),
            metadata=SEGMENTS,
        )
        if reply.member:
            member = subject
            break
    assert member is not None
    await platform.withdraw(member, *PURPOSES)

    async def stopped() -> bool:
        inside = await segments.IsMember(
            segment_pb2.IsMemberRequest(segment_id="bought-heart", subject_id=member),
            metadata=SEGMENTS,
        )
        answer = await recommend.Recommend(
            recommend_pb2.RecommendRequest(subject_id=member, k=5), metadata=RECOMMEND
        )
        return not inside.member and not answer.personalized

    await wait_until(stopped, timeout=1.0, message="withdrawal effective everywhere")


async def test_export_then_erasure_of_a_customer(
    platform: RunningPlatform, customers: list[str]
) -> None:
    subject = customers[0]
    privacy = privacy_pb2_grpc.PrivacyServiceStub(platform.channel("consent"))

    async def finished(request_id: str) -> None:
        async def done() -> bool:
            reply = await privacy.GetPrivacyRequest(
                privacy_pb2.GetPrivacyRequestRequest(request_id=request_id), metadata=OFFICER
            )
            return bool(reply.state == privacy_pb2.REQUEST_STATE_COMPLETED)

        await wait_until(done, timeout=60, message="privacy request completed")

    exported = await privacy.RequestExport(
        privacy_pb2.RequestExportRequest(subject_id=subject, idempotency_key=f"x-{subject}"),
        metadata=OFFICER,
    )
    await finished(exported.request_id)
    document = await privacy.GetExportDocument(
        privacy_pb2.GetExportDocumentRequest(request_id=exported.request_id), metadata=OFFICER
    )
    parts = json.loads(document.document_json)["services"]
    assert set(parts) == set(SERVICE_NAMES)
    assert parts["profile"]["profiles"][0]["profile_id"] == subject
    assert parts["segment"]["event_facts"]
    assert parts["recommend"]["interactions"]

    erased = await privacy.RequestErasure(
        privacy_pb2.RequestErasureRequest(subject_id=subject, confirm=True, reference="DSR-1"),
        metadata=OFFICER,
    )
    await finished(erased.request_id)
    profiles = profile_pb2_grpc.ProfileServiceStub(platform.channel("profile"))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await profiles.GetProfile(
            profile_pb2.GetProfileRequest(
                subject_id=subject, purpose="personalization", non_personal_only=True
            ),
            metadata=PROFILES,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    schemas = [s.schema for s in platform.group.services.values()]
    assert await rows_naming(platform.service("consent").infra.pg_dsn, schemas, subject) == []
    assert await rows_naming(platform.service("consent").infra.pg_dsn, schemas, customers[1]), (
        "the scan finds a customer who was not erased"
    )
