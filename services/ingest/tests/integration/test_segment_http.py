"""The Segment-compatible HTTP intake, driven by Segment's own Python library."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import aiohttp
import pytest
from segment.analytics import Client

from tailor.events.v1 import events_pb2
from tailor_core.streams import Stream

from .conftest import Platform
from .test_collection import stream_envelopes

pytestmark = [pytest.mark.integration]


def _segment_client(platform: Platform, write_key: str, errors: list[Any]) -> Client:
    return Client(
        write_key,
        host=platform.http_base,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )


async def _published(platform: Platform, event_id: str) -> list[events_pb2.Envelope]:
    return [e for e in await stream_envelopes(platform, Stream.EVENTS) if e.id == event_id]


async def test_segments_library_sends_an_order_that_lands_typed_on_events(
    platform: Platform,
) -> None:
    key, source = await platform.api_key()
    errors: list[Any] = []
    client = _segment_client(platform, key[0][1], errors)
    message_id = str(uuid.uuid4())
    await asyncio.to_thread(
        client.track,
        user_id="uci-17850",
        event="Order Completed",
        properties={
            "order_id": "536365",
            "revenue": 15.3,
            "currency": "GBP",
            "products": [{"product_id": "85123A", "price": 2.55, "quantity": 6}],
            "gift_wrap": True,
        },
        context={"locale": "en-GB", "ip": "203.0.113.9"},
        message_id=message_id,
    )
    assert errors == []
    [envelope] = await _published(platform, f"{source}/{message_id}")
    order = envelope.customer_event.track.order
    assert (order.order_id, order.revenue.amount, order.revenue.currency) == (
        "536365",
        "15.3",
        "GBP",
    )
    assert (order.products[0].product_id, order.products[0].quantity) == ("85123A", 6)
    assert envelope.customer_event.properties["gift_wrap"] is True
    assert envelope.customer_event.context.ip.WhichOneof("value") == "encrypted"
    assert envelope.customer_event.context.library.startswith("analytics-python/")


async def test_a_resent_batch_is_deduplicated_like_over_grpc(platform: Platform) -> None:
    key, source = await platform.api_key()
    errors: list[Any] = []
    client = _segment_client(platform, key[0][1], errors)
    for _ in range(2):
        await asyncio.to_thread(
            client.track,
            user_id="uci-1",
            event="Order Completed",
            properties={"order_id": "9"},
            message_id="same-id",
        )
    assert errors == []
    assert len(await _published(platform, f"{source}/same-id")) == 1


async def _post(platform: Platform, path: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {}
    if key is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{platform.http_base}{path}", data=json.dumps(body), headers=headers
        ) as response,
    ):
        return response.status, await response.json()


async def test_http_answers_say_what_went_wrong(platform: Platform) -> None:
    key, _ = await platform.api_key()
    secret = key[0][1]
    status, body = await _post(platform, "/v1/track", {"userId": "u", "event": "x"}, None)
    assert (status, body["code"]) == (401, "unauthenticated")
    status, body = await _post(platform, "/v1/track", {"userId": "u", "timestamp": 5}, secret)
    assert (status, body["field"]) == (400, "timestamp")
    status, body = await _post(platform, "/v1/batch", {"batch": []}, secret)
    assert (status, body["field"]) == (400, "batch")
    status, body = await _post(
        platform,
        "/v1/track",
        {
            "userId": "u",
            "event": "Order Completed",
            "properties": {"order_id": "1", "products": [{"product_id": "p", "quantity": -2}]},
        },
        secret,
    )
    assert status == 400
    assert body["results"][0]["errors"][0]["reason"] == "VALIDATION_REASON_NEGATIVE_QUANTITY"
    status, body = await _post(
        platform,
        "/v1/batch",
        {
            "batch": [
                {"type": "page", "anonymousId": "a-1", "name": "Home"},
                {"type": "alias", "userId": "u-2", "previousId": "a-1"},
            ]
        },
        secret,
    )
    assert status == 200
    assert [r["outcome"] for r in body["results"]] == ["suppressed", "suppressed"]


async def test_a_key_over_its_rate_gets_429_with_retry_after(platform: Platform) -> None:
    key, _ = await platform.api_key(rate_limit_per_second=1, burst=1)
    message = {"userId": "u", "event": "Order Completed", "properties": {"order_id": "1"}}
    first, _ = await _post(platform, "/v1/track", message, key[0][1])
    assert first == 200
    headers = {"Authorization": "Basic " + base64.b64encode(f"{key[0][1]}:".encode()).decode()}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{platform.http_base}/v1/track", data=json.dumps(message), headers=headers
        ) as response,
    ):
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
