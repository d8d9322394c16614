from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tailor_recommend.domain.popularity import (
    PopularityModel,
    context_groups,
    daypart,
    segment_group,
)

NOW = datetime(2011, 6, 29, tzinfo=UTC)


def test_popular_counts_only_the_window_and_orders_by_weight() -> None:
    model = PopularityModel()
    for _ in range(3):
        model.add("A", 1.0, NOW - timedelta(hours=2))
    model.add("B", 5.0, NOW - timedelta(hours=1))
    model.add("C", 100.0, NOW - timedelta(days=9))  # outside a 7-day window
    found = model.popular(10, NOW, timedelta(days=7))
    assert [(p.item_id, p.score) for p in found] == [("B", 5.0), ("A", 3.0)]
    assert model.popular(10, NOW, timedelta(days=30))[0].item_id == "C"
    assert [p.item_id for p in model.popular(10, NOW, timedelta(days=7), exclude={"B"})] == ["A"]


def test_trending_prefers_growth_over_volume() -> None:
    model = PopularityModel()
    for day in range(28):  # steady best-seller: 20 a day
        model.add("steady", 20.0, NOW - timedelta(days=29 - day, hours=-1))
    model.add("steady", 20.0, NOW - timedelta(hours=3))
    model.add("rising", 1.0, NOW - timedelta(days=10))
    model.add("rising", 15.0, NOW - timedelta(hours=3))
    model.add("once", 1.0, NOW - timedelta(hours=3))
    found = model.trending(10, NOW, timedelta(days=1), baseline=timedelta(days=28), smoothing=5)
    assert [p.item_id for p in found] == ["rising", "once"]  # steady is flat: lift 1
    rising = found[0]
    assert rising.score == pytest.approx((15 + 5) / (1 / 28 + 5))
    assert rising.recent == 15.0


def test_groups_count_separately_and_everything_counts_globally() -> None:
    model = PopularityModel()
    model.add("A", 1.0, NOW - timedelta(hours=1), groups=[segment_group("vip")])
    model.add("B", 2.0, NOW - timedelta(hours=1), groups=["country:FR"])
    assert [p.item_id for p in model.popular(5, NOW, group="segment:vip")] == ["A"]
    assert [p.item_id for p in model.popular(5, NOW)] == ["B", "A"]
    assert model.has_group("country:FR")
    assert not model.has_group("country:DE")


def test_expire_forgets_buckets_past_retention() -> None:
    model = PopularityModel(retention=timedelta(days=10))
    model.add("A", 1.0, NOW - timedelta(days=20))
    model.add("B", 1.0, NOW - timedelta(days=1))
    model.expire(NOW)
    assert [p.item_id for p in model.popular(5, NOW, timedelta(days=365))] == ["B"]


def test_a_write_after_a_read_is_seen() -> None:
    model = PopularityModel()
    model.add("A", 1.0, NOW - timedelta(hours=1))
    assert model.popular(5, NOW)[0].item_id == "A"
    model.add("B", 2.0, NOW - timedelta(hours=1))
    assert model.popular(5, NOW)[0].item_id == "B"


def test_context_group_keys() -> None:
    assert context_groups(country="GB", device_type="mobile", local_hour=20) == [
        "country:GB",
        "device:mobile",
        "daypart:evening",
    ]
    assert [daypart(h) for h in (0, 6, 12, 18, 23)] == [
        "night",
        "morning",
        "afternoon",
        "evening",
        "night",
    ]
