from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor_recommend.domain.evaluation import (
    coverage,
    evaluate,
    hit_rate,
    mean_percentile,
    ndcg,
    popularity_percentiles,
    recall,
    temporal_split,
)
from tailor_recommend.domain.interactions import EventKind, Interaction

CUTOFF = datetime(2011, 11, 9, tzinfo=UTC)
RANKED = ["a", "b", "c", "d"]
RELEVANT = {"b", "d", "e"}


def test_hit_rate() -> None:
    assert hit_rate(RANKED, RELEVANT, 1) == 0.0
    assert hit_rate(RANKED, RELEVANT, 2) == 1.0


def test_ndcg_by_hand() -> None:
    # hits at ranks 2 and 4; the ideal puts 3 hits at ranks 1..3
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(RANKED, RELEVANT, 4) == pytest.approx(dcg / ideal)
    # at k=2 the ideal is 2 hits
    assert ndcg(RANKED, RELEVANT, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg(["b", "d", "e"], RELEVANT, 10) == pytest.approx(1.0)
    assert ndcg(RANKED, set(), 10) == 0.0


def test_recall() -> None:
    assert recall(RANKED, RELEVANT, 4) == pytest.approx(2 / 3)
    assert recall(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)


def test_coverage_counts_items_shown_to_anyone() -> None:
    assert coverage([["a", "b", "c"], ["b", "d"]], 10, 2) == pytest.approx(0.3)  # a b d


def test_popularity_percentiles_share_ties() -> None:
    found = popularity_percentiles({"a": 1, "b": 1, "c": 5, "d": 9})
    assert found == {"a": 0.25, "b": 0.25, "c": 0.625, "d": 0.875}
    assert mean_percentile([["d", "c"], ["a"]], found, 10) == pytest.approx(
        (0.875 + 0.625 + 0.25) / 3
    )


@given(
    st.lists(st.sampled_from("abcdefgh"), unique=True),
    st.sets(st.sampled_from("abcdefgh"), min_size=1),
    st.integers(1, 8),
)
def test_metrics_stay_in_range_and_agree(ranked: list[str], relevant: set[str], k: int) -> None:
    h, n, r = hit_rate(ranked, relevant, k), ndcg(ranked, relevant, k), recall(ranked, relevant, k)
    assert 0.0 <= n <= 1.0 + 1e-12
    assert 0.0 <= r <= 1.0
    assert (h == 0.0) == (n == 0.0) == (r == 0.0)


def buy(user: str, item: str, days: float, kind: EventKind = EventKind.PURCHASE) -> Interaction:
    return Interaction(user, item, kind, CUTOFF + timedelta(days=days))


def test_temporal_split_keeps_new_items_of_training_users() -> None:
    split = temporal_split(
        [
            buy("u1", "A", -10),
            buy("u1", "B", -5),
            buy("u2", "A", -3),
            buy("u1", "A", 1),  # bought before: a repeat, not a target
            buy("u1", "C", 2, EventKind.VIEW),  # not a purchase
            buy("u1", "B", 3),
            buy("u2", "B", 3),
            buy("u2", "Z", 4),  # no one saw Z in training
            buy("u3", "A", 2),  # u3 is not in training
        ],
        CUTOFF,
    )
    assert split.targets == {"u2": frozenset({"B"})}
    assert split.bought == {"u2": frozenset({"A"})}
    assert split.catalogue == {"A", "B"}
    assert (split.dropped_repeat, split.dropped_unseen) == (2, 1)
    assert len(split.train) == 3


def test_evaluate_leaves_out_training_purchases() -> None:
    split = temporal_split(
        [buy("u1", "A", -1), buy("u2", "B", -1), buy("u1", "B", 1), buy("u2", "A", 1)], CUTOFF
    )

    def cheat(user: str, bought: frozenset[str], k: int) -> list[str]:
        return ["A", "B"]  # ignores ``bought``: its first answer is removed

    metrics = evaluate(cheat, split, popularity_percentiles({"A": 1, "B": 2}))
    assert metrics.users == 2
    assert metrics.hr10 == 1.0
    assert metrics.ndcg10 == 1.0
    assert metrics.coverage10 == 1.0
