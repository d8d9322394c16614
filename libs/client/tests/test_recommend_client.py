"""RecommendClient and AsyncRecommendClient against real consent, ingest and recommend
processes: recommendations, similar and popular items as typed lists, model status, and
InvalidArgument naming the field at fault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.recommend.v1 import recommend_pb2
from tailor_client import AsyncRecommendClient, Recommendations, RecommendClient, customer_event
from tailor_client.errors import InvalidArgument
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until

from .conftest import token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READER = token("recommend:read", kind="service")
ADMIN = token("recommend:read", "recommend:admin")
CANDLES = [f"CANDLE-{n}" for n in range(4)]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    env = {"recommend": {"TAILOR_FOLLOW_SECONDS": "0.1", "TAILOR_TRAIN_INTERVAL_SECONDS": "0"}}
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("recommend-client-logs"),
        ("consent", "ingest", "recommend"),
        env=env,
        prefix="cr",
    ) as running:
        yield running


def _order(user: str, items: list[str]) -> events_pb2.CustomerEvent:
    return customer_event(
        user_id=user,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=unique_name("o"),
                products=[
                    events_pb2.Product(
                        product_id=item,
                        category="Home/Candles",
                        price=common_pb2.Money(amount="3.00", currency="GBP"),
                        quantity=1,
                    )
                    for item in items
                ],
                revenue=common_pb2.Money(amount=f"{3 * len(items)}.00", currency="GBP"),
            ),
        ),
    )


@pytest.fixture(scope="module")
async def buyer(platform: RunningPlatform) -> str:
    """Six shoppers bought candles together; the first one, who consented, is returned."""
    users = [unique_name("shopper") for _ in range(6)]
    for user in users:
        await platform.grant(user, "personalization")
    orders = [_order(u, [CANDLES[n % 4], CANDLES[(n + 1) % 4]]) for n, u in enumerate(users)]
    reply = await platform.send(*orders)
    assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results), reply
    async with AsyncRecommendClient(platform.service("recommend").address, READER) as client:

        async def followed() -> bool:
            return (await client.similar_items(CANDLES[0], k=2)).item_known

        await wait_until(followed, timeout=30, message="orders reached the real-time model")
    return users[0]


async def test_recommendations_round_trip_as_a_typed_list(
    platform: RunningPlatform, buyer: str
) -> None:
    address = platform.service("recommend").address
    async with AsyncRecommendClient(address, READER) as client:
        mine = await client.recommend(buyer, k=3, exclude_purchased=True)
        similar = await client.similar_items(CANDLES[0], k=3)
        popular = await client.popular(k=4)
    assert isinstance(mine, Recommendations)
    assert mine.personalized
    assert mine.non_personalized_reason == ""
    assert mine.recommendation_id
    assert set(mine.item_ids) <= set(CANDLES[2:])  # the buyer's own candles left out
    assert all(item.category == "Home/Candles" and item.reasons for item in mine)
    assert similar.item_known
    assert CANDLES[0] not in similar.item_ids
    assert similar[0].source in ("cooccurrence", "blend")
    assert set(popular.item_ids) == set(CANDLES)
    assert popular.response.recommendation_id == popular.recommendation_id

    def blocking() -> tuple[Recommendations, recommend_pb2.GetModelStatusResponse]:
        with RecommendClient(address, ADMIN) as admin:
            return admin.recommend(unique_name("stranger"), k=2), admin.get_model_status()

    stranger, status = await asyncio.to_thread(blocking)
    assert not stranger.personalized
    assert stranger.non_personalized_reason == "no_consent"
    assert len(stranger) == 2
    models = {m.model: m for m in status.models}
    assert models[recommend_pb2.MODEL_ALS].state == recommend_pb2.MODEL_STATE_NOT_TRAINED


async def test_bad_requests_raise_invalid_argument_naming_the_field(
    platform: RunningPlatform,
) -> None:
    async with AsyncRecommendClient(platform.service("recommend").address, ADMIN) as client:
        with pytest.raises(InvalidArgument) as no_items:
            await client.recommend("someone", k=0)
        with pytest.raises(InvalidArgument) as not_batch:
            await client.train_model([recommend_pb2.MODEL_POPULAR])
    assert [v.field for v in no_items.value.violations] == ["k"]
    assert [v.field for v in not_batch.value.violations] == ["models[0]"]
