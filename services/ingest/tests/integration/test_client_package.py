"""The tailor-client package against a real ingest: batching, retries, bounds, errors."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc
from tailor_client import AsyncIngestClient, IngestClient, QueueFull, open_channel
from tailor_client.channel import credentials
from tailor_client.errors import InvalidArgument, Unauthenticated
from tailor_core.streams import Stream
from tailor_core.testing.streams import stream_message_ids

from .conftest import STAFF, Platform

pytestmark = [pytest.mark.integration]


def _order(n: int) -> dict[str, Any]:
    return {"order": events_pb2.OrderEvent(order_id=f"o-{n}"), "user_id": f"uci-{n % 7}"}


async def test_queued_events_are_batched_sent_once_and_resends_are_duplicates(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    async with AsyncIngestClient(platform.ingest.address, key[0][1], batch_size=100) as client:
        ids = [client.track("Order Completed", **_order(n)) for n in range(250)]
        await client.flush()
        assert client.stats.accepted == 250
        assert len(set(ids)) == 250
        events = [
            events_pb2.CustomerEvent(
                message_id=ids[0],
                user_id="uci-0",
                track=events_pb2.Track(
                    event="Order Completed", order=events_pb2.OrderEvent(order_id="o-0")
                ),
            )
        ]
        [again] = await client.send(events)
    assert again.outcome == 2  # DUPLICATE
    published = await stream_message_ids(platform.js, platform.naming.stream_name(Stream.EVENTS))
    counts = Counter(i for i in published if i.startswith(f"{source}/"))
    assert len(counts) == 250
    assert set(counts.values()) == {1}


async def test_rate_limited_batches_are_retried_after_the_servers_delay(
    platform: Platform,
) -> None:
    key, _ = await platform.api_key(rate_limit_per_second=20, burst=5)
    failures: list[Any] = []
    async with AsyncIngestClient(
        platform.ingest.address, key[0][1], batch_size=5, on_error=lambda e, b: failures.append(e)
    ) as client:
        for n in range(30):
            client.track("Order Completed", **_order(n))
        await asyncio.wait_for(client.flush(), 30)
    assert failures == []
    assert client.stats.accepted == 30


async def test_a_bad_key_is_reported_not_retried(platform: Platform) -> None:
    failures: list[Any] = []
    async with AsyncIngestClient(
        platform.ingest.address,
        "k0123456789abcdef.wrong",
        on_error=lambda error, batch: failures.append((error, len(batch))),
    ) as client:
        client.track("Order Completed", **_order(1))
        await client.flush()
    assert [(type(e), n) for e, n in failures] == [(Unauthenticated, 1)]
    assert client.stats.failed == 1


async def test_a_full_queue_drops_and_reports_instead_of_growing(platform: Platform) -> None:
    key, _ = await platform.api_key()
    failures: list[Any] = []
    async with AsyncIngestClient(
        platform.ingest.address, key[0][1], max_queue=3, on_error=lambda e, b: failures.append(e)
    ) as client:
        for n in range(5):  # no await in between: the sender has not run yet
            client.track("Order Completed", **_order(n))
        await client.flush()
    assert client.stats.dropped == 2
    assert [type(e) for e in failures] == [QueueFull, QueueFull]
    assert client.stats.accepted == 3


async def test_the_sync_client_sends_from_code_without_an_event_loop(platform: Platform) -> None:
    key, _ = await platform.api_key()

    def use_it() -> int:
        with IngestClient(platform.ingest.address, key[0][1]) as client:
            for n in range(10):
                client.track("Order Completed", **_order(n))
            client.flush()
            return client.stats.accepted

    assert await asyncio.to_thread(use_it) == 10


async def test_stubs_on_a_client_channel_raise_precise_exceptions(platform: Platform) -> None:
    token = STAFF[0][1].removeprefix("Bearer ")
    channel = open_channel(platform.ingest.address, credentials(token=token))
    try:
        admin = admin_pb2_grpc.IngestAdminServiceStub(channel)
        with pytest.raises(InvalidArgument) as caught:
            await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(source_id="Bad Source"))
    finally:
        await channel.close()
    assert [v.field for v in caught.value.violations] == ["source_id"]
