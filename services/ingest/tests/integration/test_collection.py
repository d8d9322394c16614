"""Ingest end to end: real consent and ingest processes, real Postgres and NATS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import keys_pb2, keys_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, ingest_pb2
from tailor_core.crypto import DataKey, decrypt_field
from tailor_core.envelopes import parse
from tailor_core.streams import Stream
from tailor_core.testing.waiting import wait_until
from tailor_ingest.testing import order_event, page_event

from .conftest import STAFF, Platform, bearer

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]

ACCEPTED = ingest_pb2.EVENT_OUTCOME_ACCEPTED
DUPLICATE = ingest_pb2.EVENT_OUTCOME_DUPLICATE
REJECTED = ingest_pb2.EVENT_OUTCOME_REJECTED
SUPPRESSED = ingest_pb2.EVENT_OUTCOME_SUPPRESSED


async def stream_envelopes(platform: Platform, stream: Stream) -> list[events_pb2.Envelope]:
    js, name = platform.js, platform.naming.stream_name(stream)
    info = await js.stream_info(name)
    if info.state.messages == 0:
        return []
    found = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            found.append(parse((await js.get_msg(name, sequence)).data))
        except Exception:  # a purged gap
            continue
    return found


def bad_request(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    violations = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            violations += [(v.field, v.reason) for v in request.field_violations]
    return violations


async def test_an_order_is_accepted_once_and_published_on_its_subjects_partition(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    event = order_event("uci-12346", "536365", message_id="o-536365")
    reply = await platform.ingest_stub().Batch(
        ingest_pb2.BatchRequest(events=[event, event]), metadata=key
    )
    assert [r.outcome for r in reply.results] == [ACCEPTED, DUPLICATE]

    again = await platform.ingest_stub().Track(ingest_pb2.TrackRequest(event=event), metadata=key)
    assert again.result.outcome == DUPLICATE

    published = [
        e for e in await stream_envelopes(platform, Stream.EVENTS) if e.id == f"{source}/o-536365"
    ]
    assert len(published) == 1
    envelope = published[0]
    assert envelope.type == "tailor.events.v1.track"
    assert envelope.subject == "uci-12346"
    assert envelope.customer_event.source_id == source
    assert envelope.customer_event.track.order.order_id == "536365"


async def test_a_resend_after_a_restart_is_a_duplicate(platform: Platform) -> None:
    key, source = await platform.api_key()
    event = order_event("uci-77", "900001", message_id="restart-1")
    first = await platform.ingest_stub().Batch(
        ingest_pb2.BatchRequest(events=[event]), metadata=key
    )
    assert first.results[0].outcome == ACCEPTED
    await platform.restart_ingest()
    second = await platform.ingest_stub().Batch(
        ingest_pb2.BatchRequest(events=[event]), metadata=key
    )
    assert second.results[0].outcome == DUPLICATE
    ids = [e.id for e in await stream_envelopes(platform, Stream.EVENTS)]
    assert ids.count(f"{source}/restart-1") == 1


async def test_behaviour_is_kept_only_with_analytics_consent(platform: Platform) -> None:
    key, _ = await platform.api_key()
    subject = f"visitor-{uuid.uuid4().hex[:8]}"
    before = await platform.ingest_stub().Page(
        ingest_pb2.PageRequest(event=page_event(subject, "p-1")), metadata=key
    )
    assert before.result.outcome == SUPPRESSED
    assert before.result.suppression_reason == ingest_pb2.SUPPRESSION_REASON_NO_CONSENT
    assert before.result.suppression_purpose == "analytics"

    await platform.grant(subject, "analytics")

    async def accepted() -> bool:
        reply = await platform.ingest_stub().Page(
            ingest_pb2.PageRequest(event=page_event(subject, f"p-{uuid.uuid4().hex}")),
            metadata=key,
        )
        return bool(reply.result.outcome == ACCEPTED)

    await wait_until(accepted, timeout=5, message="page accepted after the grant")
    # The suppressed page was never stored: sending it again now is not a duplicate.
    resent = await platform.ingest_stub().Page(
        ingest_pb2.PageRequest(event=page_event(subject, "p-1")), metadata=key
    )
    assert resent.result.outcome == ACCEPTED


async def test_personal_fields_leave_ingest_sealed_with_the_subjects_key(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    subject = f"user-{uuid.uuid4().hex[:8]}"
    await platform.grant(subject, "analytics")
    identify = events_pb2.CustomerEvent(
        message_id="id-1",
        user_id=subject,
        identify=events_pb2.Identify(
            email=common_pb2.PersonalField(plaintext="ada@example.com"),
            demographics=events_pb2.Demographics(age=36, country="GB"),
        ),
    )
    identify.context.ip.plaintext = "203.0.113.7"

    async def accepted() -> bool:
        reply = await platform.ingest_stub().Identify(
            ingest_pb2.IdentifyRequest(event=identify), metadata=key
        )
        return bool(reply.result.outcome == ACCEPTED)

    await wait_until(accepted, timeout=5, message="identify accepted")
    name = platform.naming.stream_name(Stream.EVENTS)
    last = (await platform.js.stream_info(name)).state.last_seq
    raw = [(await platform.js.get_msg(name, seq)).data or b"" for seq in range(1, last + 1)]
    stored = [parse(data) for data in raw if parse(data).id == f"{source}/id-1"]
    assert len(stored) == 1
    assert all(b"ada@example.com" not in data and b"203.0.113.7" not in data for data in raw)
    sealed = stored[0].customer_event.identify.email
    assert sealed.WhichOneof("value") == "encrypted"
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        data_key = await keys_pb2_grpc.KeyServiceStub(channel).GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id=subject),
            metadata=bearer("keys:encrypt", sub="ingest", kind="service"),
        )
    key_material = DataKey(data_key.key_id, data_key.key)
    assert decrypt_field(key_material, sealed.encrypted) == "ada@example.com"
    assert sealed.encrypted.field == "identify.email"
    ip = stored[0].customer_event.context.ip.encrypted
    assert decrypt_field(key_material, ip) == "203.0.113.7"


async def test_a_rejected_event_fails_a_unary_call_with_reasons_and_is_queryable(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    bad = order_event("uci-5", "C536379", message_id="bad-1", quantity=-3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await platform.ingest_stub().Track(ingest_pb2.TrackRequest(event=bad), metadata=key)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("track.order.products[0].quantity", "VALIDATION_REASON_NEGATIVE_QUANTITY") in (
        bad_request(caught.value)
    )
    listed = await platform.admin_stub().ListRejectedEvents(
        admin_pb2.ListRejectedEventsRequest(
            source_id=source, reason=events_pb2.VALIDATION_REASON_NEGATIVE_QUANTITY
        ),
        metadata=STAFF,
    )
    assert [e.rejection.message_id for e in listed.events] == ["bad-1"]
    one = await platform.admin_stub().GetRejectedEvent(
        admin_pb2.GetRejectedEventRequest(rejection_id=listed.events[0].rejection_id),
        metadata=STAFF,
    )
    assert one.event.rejection.rejected_event.track.order.order_id == "C536379"
    rejected = [
        e
        for e in await stream_envelopes(platform, Stream.REJECTED)
        if e.event_rejected.source_id == source
    ]
    assert [e.event_rejected.message_id for e in rejected] == ["bad-1"]


async def test_a_batch_reports_each_event_and_counts_them_per_source_and_rule(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    events = [
        order_event("uci-1", "1", message_id="q-1"),
        order_event("uci-1", "2", message_id="q-2", quantity=-1),
        page_event("nobody-consented", "q-3"),
        order_event("uci-1", "1", message_id="q-1"),
    ]
    reply = await platform.ingest_stub().Batch(ingest_pb2.BatchRequest(events=events), metadata=key)
    assert [r.outcome for r in reply.results] == [ACCEPTED, REJECTED, SUPPRESSED, DUPLICATE]
    start = datetime.now(UTC) - timedelta(minutes=5)
    request = admin_pb2.GetQualityMetricsRequest(source_id=source)
    request.range.start.FromDatetime(start)

    async def counted() -> bool:
        metrics = await platform.admin_stub().GetQualityMetrics(request, metadata=STAFF)
        if len(metrics.sources) != 1:
            return False
        row = metrics.sources[0]
        return (row.accepted, row.rejected, row.suppressed, row.duplicates) == (1, 1, 1, 1)

    await wait_until(counted, timeout=5, message="quality counts flushed")
    row = (await platform.admin_stub().GetQualityMetrics(request, metadata=STAFF)).sources[0]
    # The refunded line's quantity and the order's revenue are both negative.
    assert sorted((r.reason, r.count) for r in row.rejections_by_reason) == [
        (events_pb2.VALIDATION_REASON_NEGATIVE_QUANTITY, 1),
        (events_pb2.VALIDATION_REASON_NEGATIVE_AMOUNT, 1),
    ]
    assert [(s.purpose, s.count) for s in row.suppressions] == [("analytics", 1)]


async def test_calls_need_a_live_key_with_the_write_scope(platform: Platform) -> None:
    event = order_event("uci-9", "9", message_id="auth-1")
    stub = platform.ingest_stub()
    with pytest.raises(grpc.aio.AioRpcError) as no_key:
        await stub.Track(ingest_pb2.TrackRequest(event=event))
    assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await stub.Track(
            ingest_pb2.TrackRequest(event=event),
            metadata=(("x-api-key", "k0123456789abcdef.not-the-secret"),),
        )
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as staff_token:
        await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=STAFF)
    assert staff_token.value.code() == grpc.StatusCode.PERMISSION_DENIED

    key, source = await platform.api_key()
    admin_only, _ = await platform.api_key(source, scopes=["ingest:admin"])
    with pytest.raises(grpc.aio.AioRpcError) as wrong_scope:
        await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=admin_only)
    assert wrong_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED

    key_id = key[0][1].split(".")[0]
    await platform.admin_stub().RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=STAFF
    )

    async def refused() -> bool:
        try:
            await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=key)
        except grpc.aio.AioRpcError as error:
            return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
        return False

    await wait_until(refused, timeout=3, message="revocation in force")


async def test_a_key_over_its_rate_is_told_when_to_retry(platform: Platform) -> None:
    key, _ = await platform.api_key(rate_limit_per_second=5, burst=5)
    events = [order_event("uci-3", str(n), message_id=f"rate-{n}") for n in range(5)]
    stub = platform.ingest_stub()
    reply = await stub.Batch(ingest_pb2.BatchRequest(events=events), metadata=key)
    assert all(r.outcome == ACCEPTED for r in reply.results)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Batch(
            ingest_pb2.BatchRequest(events=[order_event("uci-3", "6", message_id="rate-6")]),
            metadata=key,
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1


async def test_overload_is_refused_not_queued(platform: Platform) -> None:
    # The platform runs with TAILOR_MAX_INFLIGHT_EVENTS=1000: four full batches at once
    # cannot all be in flight.
    key, _ = await platform.api_key(rate_limit_per_second=100_000, burst=100_000)
    stub = platform.ingest_stub()

    async def send(batch: int) -> grpc.StatusCode:
        events = [
            order_event(f"uci-{n}", f"{batch}-{n}", message_id=f"load-{batch}-{n}")
            for n in range(500)
        ]
        try:
            await stub.Batch(ingest_pb2.BatchRequest(events=events), metadata=key)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(send(batch) for batch in range(6)))
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert grpc.StatusCode.OK in codes


async def test_a_stream_acknowledges_every_event_in_order(platform: Platform) -> None:
    key, _ = await platform.api_key()
    requests = [
        ingest_pb2.StreamEventsRequest(
            events=[
                ingest_pb2.SequencedEvent(
                    sequence=batch * 10 + n,
                    event=order_event(f"uci-{n}", f"s{batch}{n}", message_id=f"s-{batch}-{n}"),
                )
                for n in range(10)
            ]
        )
        for batch in range(3)
    ]

    async def produce() -> AsyncIterator[ingest_pb2.StreamEventsRequest]:
        for request in requests:
            yield request

    acks = [
        ack
        async for response in platform.ingest_stub().StreamEvents(produce(), metadata=key)
        for ack in response.acks
    ]
    assert [a.sequence for a in acks] == list(range(30))
    assert all(a.result.outcome == ACCEPTED for a in acks)


async def test_a_stream_with_decreasing_sequence_numbers_is_refused(platform: Platform) -> None:
    key, _ = await platform.api_key()

    async def produce() -> AsyncIterator[ingest_pb2.StreamEventsRequest]:
        yield ingest_pb2.StreamEventsRequest(
            events=[
                ingest_pb2.SequencedEvent(sequence=5, event=order_event("u", "1", message_id="d1")),
                ingest_pb2.SequencedEvent(sequence=5, event=order_event("u", "2", message_id="d2")),
            ]
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in platform.ingest_stub().StreamEvents(produce(), metadata=key):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value) == [("events[1].sequence", "SEQUENCE_NOT_INCREASING")]
