"""The segment API on the real-data sample imported through ingest: definitions and their
versions, preview, members, discovery and promotion, audits, and precise errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from tailor.common.v1 import common_pb2
from tailor.segment.v1 import rules_pb2, segment_pb2
from tailor_cli.importing import uci
from tailor_cli.importing.command import import_file
from tailor_core.testing.infra import Infra
from tailor_core.testing.waiting import wait_until
from tailor_segment.testing import READER, STAFF, WRITER, SegmentPlatform, segment_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SegmentPlatform]:
    async with segment_platform(infra, tmp_path_factory.mktemp("segment-logs")) as running:
        yield running


SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"
PRODUCT = "85123A"


def _orders() -> list[tuple[str, str, Decimal, set[str]]]:
    """(subject, event name, revenue, products) of every order ingest accepts."""
    return [
        (
            event.user_id or event.anonymous_id,
            event.track.event,
            Decimal(event.track.order.revenue.amount),
            {p.product_id for p in event.track.order.products},
        )
        for event in uci.accepted_events(SAMPLE)
    ]


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            request = error_details_pb2.BadRequest()
            for detail in status.details:
                if detail.Unpack(request):
                    return [(v.field, v.description) for v in request.field_violations]
    return []


@pytest.fixture(scope="module")
async def customers(platform: SegmentPlatform) -> set[str]:
    """The sample imported, and four in five named customers' consent to marketing (guests
    and the others have none): what the segments below are computed on."""
    summary, _ = await import_file(
        SAMPLE, ingest_addr=platform.group.services["ingest"].address, admin=STAFF
    )
    accepted = summary.outcomes["accepted"].events

    async def all_facts() -> bool:
        stored = await platform.pg.fetchval(
            f'SELECT count(*) FROM "{platform.schema}".subject_events'
        )
        return int(stored) >= accepted

    await wait_until(all_facts, timeout=120, message="every event reached segment")
    named = sorted({subject for subject, *_ in _orders() if subject.startswith("uci-")})
    granted = {subject for n, subject in enumerate(named) if n % 5}  # a fifth never consents
    for subject in sorted(granted):
        await platform.grant(subject, "marketing")
    return granted


async def _members(platform: SegmentPlatform, segment_id: str, page_size: int = 1000) -> set[str]:
    found: set[str] = set()
    token = ""
    while True:
        reply = await platform.segments().ListMembers(
            segment_pb2.ListMembersRequest(
                segment_id=segment_id,
                page=common_pb2.PageRequest(page_size=page_size, page_token=token),
            ),
            metadata=READER,
        )
        found |= {m.subject_id for m in reply.members}
        token = reply.page.next_page_token
        if not token:
            return found


async def test_lifetime_segments_on_the_sample_match_the_file(
    platform: SegmentPlatform, customers: set[str]
) -> None:
    bought = {
        s for s, name, _, products in _orders() if name == "Order Completed" and PRODUCT in products
    }
    spent: dict[str, Decimal] = {}
    for subject, name, revenue, _ in _orders():
        if name == "Order Completed":
            spent[subject] = spent.get(subject, Decimal(0)) + revenue
    big = {s for s, total in spent.items() if total > 1000}
    await platform.create(
        "bought-heart", f'event "Order Completed" where product.product_id = "{PRODUCT}"'
    )
    await platform.create("big-spenders", 'event "Order Completed" sum order.revenue.amount > 1000')
    assert bought & customers
    assert bought - customers, "some buyers have not consented"
    assert await _members(platform, "bought-heart", page_size=7) == bought & customers
    assert await _members(platform, "big-spenders") == big & customers
    preview = await platform.segments().PreviewSegment(
        segment_pb2.PreviewSegmentRequest(
            rule=segment_pb2.RuleInput(
                text=f'event "Order Completed" where product.product_id = "{PRODUCT}"'
            ),
            sample_size=5,
        ),
        metadata=READER,
    )
    assert preview.size == len(bought & customers)
    assert preview.excluded_without_consent == len(bought - customers)
    assert set(preview.sample_subject_ids) <= bought & customers
    assert len(preview.sample_subject_ids) == 5
    assert preview.population == len(customers)


async def test_an_update_makes_a_version_and_re_evaluates(
    platform: SegmentPlatform, customers: set[str]
) -> None:
    stub = platform.segments()
    spent: dict[str, Decimal] = {}
    for subject, name, revenue, _ in _orders():
        if name == "Order Completed":
            spent[subject] = spent.get(subject, Decimal(0)) + revenue
    created = await platform.create(
        "spenders", 'event "Order Completed" sum order.revenue.amount > 5000'
    )
    assert created.version == 1
    updated = await stub.UpdateSegment(
        segment_pb2.UpdateSegmentRequest(
            segment_id="spenders",
            expected_version=1,
            rule=segment_pb2.RuleInput(
                text='event "Order Completed" sum order.revenue.amount > 2000'
            ),
        ),
        metadata=WRITER,
    )
    assert updated.segment.version == 2
    await platform.wait_active("spenders")
    assert (
        await _members(platform, "spenders")
        == {s for s, total in spent.items() if total > 2000} & customers
    )
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpdateSegment(
            segment_pb2.UpdateSegmentRequest(segment_id="spenders", expected_version=1, name="x"),
            metadata=WRITER,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    versions = await stub.ListSegmentVersions(
        segment_pb2.ListSegmentVersionsRequest(segment_id="spenders"), metadata=READER
    )
    assert [v.version for v in versions.versions] == [2, 1]
    assert versions.versions[1].rule_text == (
        'event "Order Completed" sum order.revenue.amount > 5000'
    )
    old = await stub.GetSegment(
        segment_pb2.GetSegmentRequest(segment_id="spenders", version=1), metadata=READER
    )
    assert old.segment.rule.event.threshold == 5000


async def test_discovery_is_deterministic_and_a_promoted_cluster_is_a_segment(
    platform: SegmentPlatform, customers: set[str]
) -> None:
    stub = platform.segments()

    async def completed(run_id: str) -> segment_pb2.ClusterRun:
        found: list[segment_pb2.ClusterRun] = []

        async def done() -> bool:
            reply = await stub.GetClusterRun(
                segment_pb2.GetClusterRunRequest(run_id=run_id), metadata=READER
            )
            found.append(reply.run)
            assert reply.run.state != segment_pb2.CLUSTER_RUN_STATE_FAILED, reply.run.error
            return bool(reply.run.state == segment_pb2.CLUSTER_RUN_STATE_COMPLETED)

        await wait_until(done, timeout=120, message="discovery run completed")
        return found[-1]

    runs = []
    for _ in range(2):
        started = await stub.RunClustering(
            segment_pb2.RunClusteringRequest(k_min=2, k_max=6, seed=7), metadata=WRITER
        )
        runs.append(await completed(started.run.run_id))
    first, second = runs
    assert 2 <= first.k <= 6
    assert first.profiles == len(customers)
    assert sum(c.size for c in first.clusters) == first.profiles
    assert [(c.size, c.label) for c in first.clusters] == [
        (c.size, c.label) for c in second.clusters
    ]
    assert [s.k for s in first.scores] == list(range(2, 2 + len(first.scores)))
    assert first.silhouette == max(s.silhouette for s in first.scores)
    smallest = first.clusters[-1]
    promoted = await stub.PromoteCluster(
        segment_pb2.PromoteClusterRequest(
            run_id=first.run_id, cluster_id=smallest.cluster_id, segment_id="discovered"
        ),
        metadata=WRITER,
    )
    assert promoted.segment.promoted_from.run_id == first.run_id
    await platform.wait_active("discovered")
    assert len(await _members(platform, "discovered")) == smallest.size
    again = await stub.GetClusterRun(
        segment_pb2.GetClusterRunRequest(run_id=first.run_id), metadata=READER
    )
    assert again.run.clusters[-1].promoted_segment_id == "discovered"


async def test_an_audit_reports_sizes_overlaps_and_warnings(
    platform: SegmentPlatform, customers: set[str]
) -> None:
    await platform.create(
        "heart-a", f'event "Order Completed" where product.product_id = "{PRODUCT}"'
    )
    await platform.create(
        "heart-b",
        f'event "Order Completed" where product.product_id = "{PRODUCT}" count >= 1',
    )
    reply = await platform.segments().AuditSegments(
        segment_pb2.AuditSegmentsRequest(
            segment_ids=["heart-a", "heart-b"], stale_after=duration_pb2.Duration(seconds=86400)
        ),
        metadata=READER,
    )
    sizes = {s.segment_id: s.size for s in reply.segments}
    assert sizes["heart-a"] == sizes["heart-b"] == len(await _members(platform, "heart-a"))
    assert [(o.a, o.b, o.jaccard) for o in reply.overlaps] == [("heart-a", "heart-b", 1.0)]
    kinds = {w.kind for w in reply.warnings}
    assert segment_pb2.AUDIT_WARNING_KIND_NEAR_DUPLICATE in kinds
    assert segment_pb2.AUDIT_WARNING_KIND_TINY_SEGMENT in kinds  # fewer than 50 members
    assert segment_pb2.AUDIT_WARNING_KIND_STALE_MEMBERS in kinds  # the data is from 2011
    assert all(s.population == len(customers) for s in reply.segments)
    assert all(s.stale_member_share == 1.0 for s in reply.segments)


async def test_malformed_rules_and_requests_get_precise_errors(platform: SegmentPlatform) -> None:
    stub = platform.segments()
    with pytest.raises(grpc.aio.AioRpcError) as text:
        await stub.CreateSegment(
            segment_pb2.CreateSegmentRequest(
                segment_id="bad",
                name="bad",
                rule=segment_pb2.RuleInput(text='event "Product Viewed" count >= within 24h'),
            ),
            metadata=WRITER,
        )
    assert text.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = _violations(text.value)
    assert field == "rule.text"
    assert description.startswith("1:33:")
    bad_window = rules_pb2.Rule(
        all=rules_pb2.RuleList(
            rules=[
                rules_pb2.Rule(
                    trait=rules_pb2.TraitComparison(
                        trait="computed.orders_lifetime", op=common_pb2.COMPARISON_GE
                    )
                ),
                rules_pb2.Rule(
                    event=rules_pb2.EventCondition(
                        match=rules_pb2.EventMatcher(event="Product Viewed"),
                        aggregate=rules_pb2.AGGREGATE_COUNT,
                        op=common_pb2.COMPARISON_GE,
                        threshold=1,
                        window=duration_pb2.Duration(seconds=-5),
                    )
                ),
            ]
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as proto:
        await stub.CreateSegment(
            segment_pb2.CreateSegmentRequest(
                segment_id="bad", name="bad", rule=segment_pb2.RuleInput(rule=bad_window)
            ),
            metadata=WRITER,
        )
    assert proto.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in _violations(proto.value)]
    assert "rule.rule.all.rules[0].trait.value" in fields
    assert "rule.rule.all.rules[1].event.window" in fields
    checked = await stub.ValidateRule(
        segment_pb2.ValidateRuleRequest(rule=segment_pb2.RuleInput(rule=bad_window)),
        metadata=READER,
    )
    assert not checked.valid
    assert {p.path for p in checked.problems} >= {"all.rules[1].event.window"}
    for request, code in (
        (segment_pb2.CreateSegmentRequest(segment_id="Bad Id", name="x"), "INVALID_ARGUMENT"),
        (
            segment_pb2.CreateSegmentRequest(
                segment_id="ok",
                name="x",
                rule=segment_pb2.RuleInput(text='event "A"'),
                purpose="no_such_purpose",
            ),
            "INVALID_ARGUMENT",
        ),
        (
            segment_pb2.CreateSegmentRequest(
                segment_id="ok", name="x", rule=segment_pb2.RuleInput(text='in segment "nope"')
            ),
            "INVALID_ARGUMENT",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateSegment(request, metadata=WRITER)
        assert refused.value.code().name == code, request
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetSegment(segment_pb2.GetSegmentRequest(segment_id="nope"), metadata=READER)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await stub.ListMembers(
            segment_pb2.ListMembersRequest(
                segment_id="bought-heart", page=common_pb2.PageRequest(page_token="garbage")
            ),
            metadata=READER,
        )
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unauthorised:
        await stub.CreateSegment(
            segment_pb2.CreateSegmentRequest(segment_id="x", name="x"), metadata=READER
        )
    assert unauthorised.value.code() == grpc.StatusCode.PERMISSION_DENIED
