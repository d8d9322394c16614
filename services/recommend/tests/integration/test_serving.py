"""The recommend service behind consent and ingest, as processes: real-time co-occurrence,
the consent gate both ways, the fallback chain, business rules, ALS training with a swap
under load, and precise errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.recommend.v1 import recommend_pb2 as pb
from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READER = bearer("recommend:read", kind="service")
ADMIN = bearer("recommend:admin", "recommend:read")
CANDLES = [f"CANDLE-{n}" for n in range(6)]
MUGS = [f"MUG-{n}" for n in range(6)]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    env = {"recommend": {"TAILOR_FOLLOW_SECONDS": "0.1", "TAILOR_TRAIN_INTERVAL_SECONDS": "0"}}
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("recommend-logs"),
        ("consent", "ingest", "recommend"),
        env=env,
        prefix="rc",
    ) as running:
        yield running


def _stub(platform: RunningPlatform) -> recommend_pb2_grpc.RecommendServiceStub:
    return recommend_pb2_grpc.RecommendServiceStub(platform.channel("recommend"))


def _order(user: str, items: list[str], category: str) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        message_id=unique_name("m"),
        user_id=user,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=unique_name("o"),
                products=[
                    events_pb2.Product(
                        product_id=item,
                        category=category,
                        price=common_pb2.Money(amount="3.00", currency="GBP"),
                        quantity=1,
                    )
                    for item in items
                ],
                revenue=common_pb2.Money(amount=f"{3 * len(items)}.00", currency="GBP"),
            ),
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    return event


@pytest.fixture(scope="module")
async def shoppers(platform: RunningPlatform) -> dict[str, list[str]]:
    """Twenty shoppers: the even ones buy candles together, the odd ones mugs."""
    bought: dict[str, list[str]] = {}
    events = []
    for n in range(20):
        user = f"shopper-{n}-{unique_name('')}"
        catalogue, category = (CANDLES, "Home/Candles") if n % 2 == 0 else (MUGS, "Kitchen/Mugs")
        items = [catalogue[(n // 2 + i) % len(catalogue)] for i in range(3)]
        bought[user] = items
        events.append(_order(user, items, category))
        await platform.grant(user, "personalization")
    reply = await platform.send(*events)
    assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results), reply
    stub = _stub(platform)

    async def followed() -> bool:
        similar = await stub.SimilarItems(
            pb.SimilarItemsRequest(item_id=CANDLES[0], k=3), metadata=READER
        )
        return similar.item_known

    await wait_until(followed, timeout=30, message="interactions reached the real-time model")
    return bought


async def test_similar_items_follow_what_was_bought_together(
    platform: RunningPlatform, shoppers: dict[str, list[str]]
) -> None:
    reply = await _stub(platform).SimilarItems(
        pb.SimilarItemsRequest(item_id=CANDLES[0], k=4), metadata=READER
    )
    assert reply.item_known
    assert {i.item_id for i in reply.items} <= set(CANDLES) - {CANDLES[0]}
    assert reply.items[0].reasons[0].kind == pb.REASON_KIND_SIMILAR_TO_ITEM
    assert reply.items[0].category == "Home/Candles"
    cold = await _stub(platform).SimilarItems(
        pb.SimilarItemsRequest(item_id="NEVER-SEEN", k=3), metadata=READER
    )
    assert not cold.item_known
    assert cold.items, "a cold item gets popular items"


async def test_personalization_needs_consent_and_says_so(
    platform: RunningPlatform, shoppers: dict[str, list[str]]
) -> None:
    stub = _stub(platform)
    user = next(u for u, items in shoppers.items() if items[0] in CANDLES)
    mine = await stub.Recommend(
        pb.RecommendRequest(subject_id=user, k=3, filters=pb.Filters(exclude_purchased=True)),
        metadata=READER,
    )
    assert mine.personalized
    assert mine.recommendation_id
    assert {i.item_id for i in mine.items} <= set(CANDLES) - set(shoppers[user])
    assert any(
        r.kind == pb.REASON_KIND_BECAUSE_YOU_INTERACTED and r.related_item_id in shoppers[user]
        for i in mine.items
        for r in i.reasons
    )
    await platform.withdraw(user, "personalization")

    async def not_personal() -> bool:
        reply = await stub.Recommend(pb.RecommendRequest(subject_id=user, k=3), metadata=READER)
        return not reply.personalized

    await wait_until(not_personal, timeout=2, message="withdrawal reached recommend")
    anonymous = await stub.Recommend(pb.RecommendRequest(subject_id=user, k=3), metadata=READER)
    assert anonymous.non_personalized_reason == pb.NON_PERSONALIZED_REASON_NO_CONSENT
    assert all(
        r.kind != pb.REASON_KIND_BECAUSE_YOU_INTERACTED for i in anonymous.items for r in i.reasons
    )
    seeded = await stub.Recommend(
        pb.RecommendRequest(subject_id=user, k=3, context_items=[MUGS[0]]), metadata=READER
    )
    assert not seeded.personalized
    assert {i.item_id for i in seeded.items} <= set(MUGS)  # the page's item still seeds it
    newcomer = unique_name("new")
    await platform.grant(newcomer, "personalization")
    cold = await stub.Recommend(pb.RecommendRequest(subject_id=newcomer, k=5), metadata=READER)
    assert cold.non_personalized_reason == pb.NON_PERSONALIZED_REASON_COLD_SUBJECT
    assert len(cold.items) == 5
    assert all(r.kind == pb.REASON_KIND_POPULAR for i in cold.items for r in i.reasons)


async def test_business_rules_filter_and_limit(
    platform: RunningPlatform, shoppers: dict[str, list[str]]
) -> None:
    reply = await _stub(platform).Popular(
        pb.PopularRequest(k=6, filters=pb.Filters(max_per_category=2, exclude_items=[CANDLES[1]])),
        metadata=READER,
    )
    categories = [i.category for i in reply.items]
    assert all(categories.count(c) <= 2 for c in categories)
    assert CANDLES[1] not in {i.item_id for i in reply.items}
    only_mugs = await _stub(platform).Popular(
        pb.PopularRequest(k=5, filters=pb.Filters(include_categories=["Kitchen"])),
        metadata=READER,
    )
    assert only_mugs.items
    assert {i.category for i in only_mugs.items} == {"Kitchen/Mugs"}


async def test_als_trains_and_swaps_in_under_load_without_a_failed_request(
    platform: RunningPlatform, shoppers: dict[str, list[str]]
) -> None:
    stub = _stub(platform)
    users = [u for u in shoppers if u != next(iter(shoppers))]

    async def serving_version() -> str:
        status = await stub.GetModelStatus(pb.GetModelStatusRequest(), metadata=ADMIN)
        als = next(m for m in status.models if m.model == pb.MODEL_ALS)
        assert als.state != pb.MODEL_STATE_FAILED, als.error
        return str(als.version) if als.state == pb.MODEL_STATE_SERVING else ""

    served: set[str] = set()  # ALS versions the load has been answered with

    async def load(stop: asyncio.Event) -> int:
        calls = 0
        while not stop.is_set():
            reply = await stub.Recommend(
                pb.RecommendRequest(subject_id=users[calls % len(users)], k=5), metadata=READER
            )
            served.update(v.version for v in reply.model_versions if v.model == pb.MODEL_ALS)
            calls += 1
        return calls

    schema = platform.service("recommend").schema
    # A version in training (here another replica's) means no second one may start.
    await platform.pg.execute(
        f'INSERT INTO "{schema}".models (version, model, state, started_at) '
        "VALUES ('elsewhere', 'als', 'TRAINING', now())"
    )
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub.TrainModel(pb.TrainModelRequest(), metadata=ADMIN)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await platform.pg.execute(f"DELETE FROM \"{schema}\".models WHERE version = 'elsewhere'")
    for _ in range(2):
        before = await serving_version()
        stop = asyncio.Event()
        workers = [asyncio.create_task(load(stop)) for _ in range(4)]
        started = await stub.TrainModel(pb.TrainModelRequest(), metadata=ADMIN)
        assert [m.state for m in started.models] == [pb.MODEL_STATE_TRAINING]

        async def swapped(before: str = before) -> bool:
            return (await serving_version()) not in ("", before)

        await wait_until(swapped, timeout=60, message="a new ALS version serving")
        new_version = await serving_version()

        async def answered_with_it(version: str = new_version) -> bool:
            return version in served

        await wait_until(answered_with_it, timeout=30, message="the load served the new version")
        stop.set()
        calls = await asyncio.gather(*workers)  # a failed request would raise here
        assert sum(calls) > 0
    status = await stub.GetModelStatus(pb.GetModelStatusRequest(), metadata=ADMIN)
    als = next(m for m in status.models if m.model == pb.MODEL_ALS)
    assert als.items == len(CANDLES) + len(MUGS)
    assert als.training_seconds > 0
    reply = await stub.Recommend(pb.RecommendRequest(subject_id=users[0], k=3), metadata=READER)
    assert als.version in {v.version for v in reply.model_versions}


def _field(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            request = error_details_pb2.BadRequest()
            for detail in status.details:
                if detail.Unpack(request):
                    return str(request.field_violations[0].field)
    return ""


async def test_malformed_requests_get_precise_errors(platform: RunningPlatform) -> None:
    stub = _stub(platform)
    cases = [
        (pb.RecommendRequest(subject_id="u", k=0), "k"),
        (pb.RecommendRequest(subject_id="u", k=101), "k"),
        (pb.RecommendRequest(k=5), "subject_id"),
        (pb.RecommendRequest(subject_id="u", k=5, context_items=["x"] * 51), "context_items"),
        (
            pb.RecommendRequest(subject_id="u", k=5, context=pb.ServingContext(local_hour=24)),
            "context.local_hour",
        ),
        (pb.RecommendRequest(subject_id="u", k=5, surface="Home Page"), "surface"),
        (
            pb.RecommendRequest(subject_id="u", k=5, filters=pb.Filters(exclude_items=["x"] * 51)),
            "filters.exclude_items",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.Recommend(request, metadata=READER)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert _field(bad.value) == field
    with pytest.raises(grpc.aio.AioRpcError) as similar:
        await stub.SimilarItems(pb.SimilarItemsRequest(k=3), metadata=READER)
    assert _field(similar.value) == "item_id"
    with pytest.raises(grpc.aio.AioRpcError) as window:
        await stub.Popular(pb.PopularRequest(k=3, window={"seconds": 60}), metadata=READER)
    assert _field(window.value) == "window"
    with pytest.raises(grpc.aio.AioRpcError) as segment:
        await stub.Popular(pb.PopularRequest(k=3, segment_id="nobody-here"), metadata=READER)
    assert segment.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as model:
        await stub.TrainModel(pb.TrainModelRequest(models=[pb.MODEL_POPULAR]), metadata=ADMIN)
    assert _field(model.value) == "models[0]"
