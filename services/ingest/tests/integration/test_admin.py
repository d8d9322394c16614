"""Ingest administration: keys, tracking plans, dry-run validation, precise errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, ingest_pb2
from tailor_core.testing.fixtures import unique_name
from tailor_ingest.testing import order_event, page_event

from .conftest import STAFF, Platform
from .test_collection import bad_request

pytestmark = [pytest.mark.integration]


def plan(source: str, **fields: object) -> admin_pb2.TrackingPlan:
    return admin_pb2.TrackingPlan(
        source_id=source,
        events=[
            admin_pb2.EventRule(event="Order Completed"),
            admin_pb2.EventRule(event="page", collection_purpose="necessary"),
        ],
        **fields,  # type: ignore[arg-type]
    )


async def test_keys_are_listed_newest_first_page_by_page_without_secrets(
    platform: Platform,
) -> None:
    source = unique_name("keys-")
    admin = platform.admin_stub()
    created = [
        (
            await admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(source_id=source, label=f"app {n}"), metadata=STAFF
            )
        ).key.key_id
        for n in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await admin.ListApiKeys(
            admin_pb2.ListApiKeysRequest(
                source_id=source, page=common_pb2.PageRequest(page_size=2, page_token=token)
            ),
            metadata=STAFF,
        )
        seen += [key.key_id for key in page.keys]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == list(reversed(created))
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await admin.ListApiKeys(
            admin_pb2.ListApiKeysRequest(
                source_id="another", page=common_pb2.PageRequest(page_token="bm9wZQ")
            ),
            metadata=STAFF,
        )
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_key_update_changes_only_the_masked_fields(platform: Platform) -> None:
    admin = platform.admin_stub()
    key = (
        await admin.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(source_id=unique_name("upd-"), label="old"),
            metadata=STAFF,
        )
    ).key
    changed = admin_pb2.ApiKey(key_id=key.key_id, label="new", rate_limit_per_second=99)
    reply = await admin.UpdateApiKey(
        admin_pb2.UpdateApiKeyRequest(
            key=changed, update_mask=field_mask_pb2.FieldMask(paths=["label"])
        ),
        metadata=STAFF,
    )
    assert (reply.key.label, reply.key.rate_limit_per_second) == ("new", 0)
    with pytest.raises(grpc.aio.AioRpcError) as unknown_field:
        await admin.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                key=changed, update_mask=field_mask_pb2.FieldMask(paths=["source_id"])
            ),
            metadata=STAFF,
        )
    assert unknown_field.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(unknown_field.value) == [("update_mask", "NOT_UPDATABLE")]
    await admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=key.key_id), metadata=STAFF)
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await admin.UpdateApiKey(
            admin_pb2.UpdateApiKeyRequest(
                key=changed, update_mask=field_mask_pb2.FieldMask(paths=["label"])
            ),
            metadata=STAFF,
        )
    assert revoked.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_creating_a_key_names_every_bad_field(platform: Platform) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await platform.admin_stub().CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                source_id="Not OK", scopes=["consent:admin"], rate_limit_per_second=-1
            ),
            metadata=STAFF,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request(caught.value)] == [
        "source_id",
        "scopes[0]",
        "rate_limit_per_second",
    ]


async def test_plans_are_versioned_and_checked_optimistically(platform: Platform) -> None:
    source = unique_name("plan-")
    admin = platform.admin_stub()
    first = await admin.PutTrackingPlan(
        admin_pb2.PutTrackingPlanRequest(plan=plan(source, description="v1")), metadata=STAFF
    )
    second = await admin.PutTrackingPlan(
        admin_pb2.PutTrackingPlanRequest(plan=plan(source, description="v2"), expected_version=1),
        metadata=STAFF,
    )
    assert (first.plan.version, second.plan.version) == (1, 2)
    assert second.plan.updated_by == "staff-1"
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await admin.PutTrackingPlan(
            admin_pb2.PutTrackingPlanRequest(plan=plan(source), expected_version=1),
            metadata=STAFF,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    old = await admin.GetTrackingPlan(
        admin_pb2.GetTrackingPlanRequest(source_id=source, version=1), metadata=STAFF
    )
    assert old.plan.description == "v1"
    current = await admin.GetTrackingPlan(
        admin_pb2.GetTrackingPlanRequest(source_id=source), metadata=STAFF
    )
    assert current.plan.description == "v2"
    deleted = await admin.DeleteTrackingPlan(
        admin_pb2.DeleteTrackingPlanRequest(source_id=source), metadata=STAFF
    )
    assert deleted.deleted_version == 2
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await admin.GetTrackingPlan(
            admin_pb2.GetTrackingPlanRequest(source_id=source), metadata=STAFF
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    still_readable = await admin.GetTrackingPlan(
        admin_pb2.GetTrackingPlanRequest(source_id=source, version=2), metadata=STAFF
    )
    assert still_readable.plan.version == 2


async def test_a_plans_collection_purpose_decides_the_consent_gate(platform: Platform) -> None:
    key, source = await platform.api_key()
    await platform.admin_stub().PutTrackingPlan(
        admin_pb2.PutTrackingPlanRequest(plan=plan(source)), metadata=STAFF
    )
    # Pages of this source are collected under "necessary": no analytics consent needed.
    reply = await platform.ingest_stub().Page(
        ingest_pb2.PageRequest(event=page_event("anonymous-visitor", "pg-1")), metadata=key
    )
    assert reply.result.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED


async def test_dry_run_validation_stores_nothing(platform: Platform) -> None:
    source = unique_name("dry-")
    admin = platform.admin_stub()
    events = [
        order_event("u1", "1", message_id="dry-1"),
        order_event("u1", "2", message_id="dry-2", quantity=-1),
    ]
    reply = await admin.ValidateEvents(
        admin_pb2.ValidateEventsRequest(proposed_plan=plan(source), events=events),
        metadata=STAFF,
    )
    assert [r.outcome for r in reply.results] == [
        ingest_pb2.EVENT_OUTCOME_ACCEPTED,
        ingest_pb2.EVENT_OUTCOME_REJECTED,
    ]
    assert reply.results[1].errors[0].reason == events_pb2.VALIDATION_REASON_NEGATIVE_QUANTITY
    listed = await admin.ListRejectedEvents(
        admin_pb2.ListRejectedEventsRequest(source_id=source), metadata=STAFF
    )
    assert list(listed.events) == []
    with pytest.raises(grpc.aio.AioRpcError) as no_plan:
        await admin.ValidateEvents(
            admin_pb2.ValidateEventsRequest(source_id=unique_name("none-"), events=events),
            metadata=STAFF,
        )
    assert no_plan.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_queries_get_precise_errors(platform: Platform) -> None:
    admin = platform.admin_stub()
    inverted = admin_pb2.ListRejectedEventsRequest()
    inverted.range.start.FromDatetime(datetime.now(UTC))
    inverted.range.end.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListRejectedEvents(inverted, metadata=STAFF)
    assert bad_request(caught.value) == [("range.end", "INVERTED_RANGE")]

    no_start = admin_pb2.GetQualityMetricsRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetQualityMetrics(no_start, metadata=STAFF)
    assert bad_request(caught.value) == [("range.start", "REQUIRED")]

    tiny = admin_pb2.GetQualityMetricsRequest()
    tiny.range.start.FromDatetime(datetime.now(UTC) - timedelta(days=30))
    tiny.bucket.FromTimedelta(timedelta(seconds=10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetQualityMetrics(tiny, metadata=STAFF)
    assert bad_request(caught.value) == [("bucket", "BUCKET_SIZE")]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetApiKey(admin_pb2.GetApiKeyRequest(key_id="k\x00"), metadata=STAFF)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await platform.ingest_stub().Batch(ingest_pb2.BatchRequest(), metadata=STAFF)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    key, _ = await platform.api_key()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await platform.ingest_stub().Batch(ingest_pb2.BatchRequest(), metadata=key)
    assert bad_request(caught.value) == [("events", "BATCH_SIZE")]
