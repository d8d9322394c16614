"""SIGKILL of ingest loses no acknowledged event and publishes none twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from tailor.ingest.v1 import ingest_pb2
from tailor_core.streams import Stream
from tailor_core.testing.streams import stream_message_ids
from tailor_ingest.testing import order_event

from .conftest import Platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCEPTED = ingest_pb2.EVENT_OUTCOME_ACCEPTED
DUPLICATE = ingest_pb2.EVENT_OUTCOME_DUPLICATE


def sequenced(first: int, count: int) -> ingest_pb2.StreamEventsRequest:
    return ingest_pb2.StreamEventsRequest(
        events=[
            ingest_pb2.SequencedEvent(
                sequence=n,
                event=order_event(f"uci-{n % 17}", f"inv-{n}", message_id=f"kill-{n}"),
            )
            for n in range(first, first + count)
        ]
    )


async def test_a_crash_between_publish_and_commit_publishes_each_event_once(
    platform: Platform,
) -> None:
    key, source = await platform.api_key(rate_limit_per_second=100_000, burst=100_000)
    await platform.restart_ingest({"TAILOR_FAILPOINTS": "ingest.after_publish=kill"})
    stub = platform.ingest_stub()
    batch = [order_event("uci-1", f"fp-{n}", message_id=f"fp-{n}") for n in range(20)]
    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await stub.Batch(ingest_pb2.BatchRequest(events=batch), metadata=key)
    assert crashed.value.code() == grpc.StatusCode.UNAVAILABLE

    await platform.restart_ingest({"TAILOR_FAILPOINTS": ""})
    retried = await platform.ingest_stub().Batch(
        ingest_pb2.BatchRequest(events=batch), metadata=key
    )
    # Never claimed before the crash: new to Postgres, and JetStream drops the second copy.
    assert all(r.outcome == ACCEPTED for r in retried.results)
    ids = await stream_message_ids(platform.js, platform.naming.stream_name(Stream.EVENTS))
    counts = Counter(i for i in ids if i.startswith(f"{source}/fp-"))
    assert len(counts) == 20
    assert set(counts.values()) == {1}


async def test_sigkill_during_a_stream_loses_no_acknowledged_event(platform: Platform) -> None:
    key, source = await platform.api_key(rate_limit_per_second=100_000, burst=100_000)
    total, per_request = 2000, 50
    acked: set[int] = set()

    async def produce(start: int) -> AsyncIterator[ingest_pb2.StreamEventsRequest]:
        for first in range(start, total, per_request):
            yield sequenced(first, min(per_request, total - first))

    stub = platform.ingest_stub()

    async def stream_until_killed() -> None:
        async for response in stub.StreamEvents(produce(0), metadata=key):
            acked.update(a.sequence for a in response.acks if a.result.outcome == ACCEPTED)
            if len(acked) >= total // 2:
                platform.ingest.kill()

    with pytest.raises(grpc.aio.AioRpcError):
        await stream_until_killed()
    assert total // 2 <= len(acked) < total

    await platform.ingest.start()
    resent: Counter[int] = Counter()
    async for response in platform.ingest_stub().StreamEvents(produce(0), metadata=key):
        for ack in response.acks:
            resent[ack.result.outcome] += 1
            if ack.sequence in acked:
                assert ack.result.outcome == DUPLICATE
    assert resent[ACCEPTED] + resent[DUPLICATE] == total

    ids = await stream_message_ids(platform.js, platform.naming.stream_name(Stream.EVENTS))
    counts = Counter(i for i in ids if i.startswith(f"{source}/kill-"))
    assert len(counts) == total
    assert set(counts.values()) == {1}
