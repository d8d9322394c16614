"""`tailor recommend …` against real consent, ingest and recommend processes: items for a
subject with the personalization line, similar and popular items, training until the new
version serves, model status, errors and exit codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.recommend.v1 import recommend_pb2 as pb
from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_cli.testing import cli_data_dir, run_tailor
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANDLES = [f"CANDLE-{n}" for n in range(6)]
MUGS = [f"MUG-{n}" for n in range(6)]


@dataclass
class Platform:
    running: RunningPlatform
    data_dir: Path

    @property
    def address(self) -> str:
        return self.running.service("recommend").address


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    env = {"recommend": {"TAILOR_FOLLOW_SECONDS": "0.1", "TAILOR_TRAIN_INTERVAL_SECONDS": "0"}}
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("recommend-cli-logs"),
        ("consent", "ingest", "recommend"),
        env=env,
        prefix="rcli",
    ) as running:
        yield Platform(running, cli_data_dir(tmp_path_factory.mktemp("tailor-data")))


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
async def buyer(platform: Platform) -> str:
    """Twenty shoppers (even ones buy candles together, odd ones mugs), all consented to
    personalization; returns a candle buyer once the real-time model has their orders."""
    users, events = [], []
    for n in range(20):
        user = f"shopper-{n}-{unique_name('')}"
        catalogue, category = (CANDLES, "Home/Candles") if n % 2 == 0 else (MUGS, "Kitchen/Mugs")
        events.append(_order(user, [catalogue[(n // 2 + i) % 6] for i in range(3)], category))
        users.append(user)
        await platform.running.grant(user, "personalization")
    reply = await platform.running.send(*events)
    assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results), reply
    stub = recommend_pb2_grpc.RecommendServiceStub(platform.running.channel("recommend"))

    async def followed() -> bool:
        similar = await stub.SimilarItems(
            pb.SimilarItemsRequest(item_id=CANDLES[0], k=3),
            metadata=bearer("recommend:read", kind="service"),
        )
        return bool(similar.item_known)

    await wait_until(followed, timeout=30, message="orders reached the real-time model")
    return users[0]


@pytest.fixture(autouse=True)
def credentials_from_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILOR_TOKEN", raising=False)
    monkeypatch.delenv("TAILOR_RECOMMEND_ADDR", raising=False)


async def tailor(platform: Platform, *args: str) -> tuple[int, str]:
    """Run ``tailor recommend …`` in-process; (exit code, everything printed)."""
    return await run_tailor(
        platform.data_dir, "recommend", *args, "--recommend-addr", platform.address
    )


async def test_for_a_consented_subject_lists_ranked_items_with_reasons(
    platform: Platform, buyer: str
) -> None:
    code, out = await tailor(platform, "for", buyer, "-k", "3", "--exclude-purchased")
    assert code == 0, out
    assert out.splitlines()[0] == "personalized"
    for column in ("rank", "item", "category", "score", "reasons"):
        assert column in out
    assert "CANDLE-" in out
    assert "Home/Candles" in out

    code, out = await tailor(platform, "for", buyer, "-k", "3", "--exclude-purchased", "--json")
    assert code == 0, out
    reply = json.loads(out)
    assert reply["personalized"] is True
    assert 1 <= len(reply["items"]) <= 3
    assert all(item["item_id"].startswith("CANDLE-") for item in reply["items"])
    assert all(item["reasons"] for item in reply["items"])


async def test_for_a_subject_without_consent_says_why_it_is_not_personalized(
    platform: Platform, buyer: str
) -> None:
    code, out = await tailor(platform, "for", unique_name("stranger"), "-k", "2")
    assert code == 0, out
    assert out.splitlines()[0] == "not personalized: no consent"

    code, out = await tailor(
        platform, "for", unique_name("stranger"), "-k", "3", "--context-item", MUGS[0], "--json"
    )
    assert code == 0, out
    reply = json.loads(out)
    assert reply["non_personalized_reason"] == "NON_PERSONALIZED_REASON_NO_CONSENT"
    assert {item["item_id"] for item in reply["items"]} <= set(MUGS)  # the page's item seeds it


async def test_similar_and_popular_items(platform: Platform, buyer: str) -> None:
    code, out = await tailor(platform, "similar", CANDLES[0], "-k", "4", "--json")
    assert code == 0, out
    similar = json.loads(out)
    assert similar["item_known"] is True
    assert {i["item_id"] for i in similar["items"]} <= set(CANDLES) - {CANDLES[0]}

    code, out = await tailor(platform, "similar", "NEVER-SEEN")
    assert code == 0, out
    assert "unknown or too cold" in out

    code, out = await tailor(platform, "popular", "-k", "5")
    assert code == 0, out
    assert "Popular" in out
    code, out = await tailor(platform, "popular", "--trending", "--json")
    assert code == 0, out
    assert json.loads(out)["items"]


async def test_refused_requests_exit_1_naming_the_status_and_field(
    platform: Platform, buyer: str
) -> None:
    code, out = await tailor(platform, "for", buyer, "-k", "0")
    assert code == 1
    assert "INVALID_ARGUMENT" in out
    assert "  k: " in out
    assert "Traceback" not in out

    code, out = await tailor(platform, "popular", "--segment", "nobody-here", "--json")
    assert code == 1
    assert json.loads(out)["error"] == "NOT_FOUND"


async def test_train_waits_until_the_new_version_serves_and_status_shows_it(
    platform: Platform, buyer: str
) -> None:
    code, out = await tailor(platform, "status", "--json")
    assert code == 0, out
    before = {m["model"]: m for m in json.loads(out)["models"]}
    assert before["als"]["state"] == "not_trained"

    code, out = await tailor(platform, "train", "--wait", "--timeout", "120", "--json")
    assert code == 0, out
    [als] = json.loads(out)
    assert als["model"] == "als"
    assert als["state"] == "serving"
    assert als["version"]
    assert als["items"] == len(CANDLES) + len(MUGS)

    code, out = await tailor(platform, "status")
    assert code == 0, out
    # An 80-column terminal (as here) folds the version; model, state and times stay whole.
    for column in ("model", "state", "trained at", "training"):
        assert column in out
    assert "serving" in out
    assert als["trained_at"] in out
