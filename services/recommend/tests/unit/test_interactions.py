from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tailor_recommend.domain.interactions import (
    EventKind,
    IdIndex,
    Interaction,
    InteractionWeights,
    build_matrix,
)

NOW = datetime(2011, 6, 1, tzinfo=UTC)


def test_event_kinds_are_weighted_and_summed_per_user_and_item() -> None:
    events = [
        Interaction("u1", "A", EventKind.VIEW, NOW),
        Interaction("u1", "A", EventKind.ADD_TO_CART, NOW),
        Interaction("u1", "A", EventKind.PURCHASE, NOW),
        Interaction("u2", "B", EventKind.VIEW, NOW),
    ]
    data = build_matrix(events, InteractionWeights(view=1, add_to_cart=3, purchase=5), NOW)
    assert data.user_row("u1") == {"A": 9.0}
    assert data.user_row("u2") == {"B": 1.0}
    assert data.interactions == 4
    assert data.matrix.shape == (2, 2)


def test_weights_halve_every_half_life() -> None:
    weights = InteractionWeights(purchase=4, half_life=timedelta(days=10))
    events = [
        Interaction("u1", "A", EventKind.PURCHASE, NOW - timedelta(days=10)),
        Interaction("u1", "B", EventKind.PURCHASE, NOW - timedelta(days=20)),
        Interaction("u1", "C", EventKind.PURCHASE, NOW + timedelta(days=1)),  # future: no boost
    ]
    row = build_matrix(events, weights, NOW).user_row("u1")
    assert row == {"A": pytest.approx(2.0), "B": pytest.approx(1.0), "C": pytest.approx(4.0)}


def test_refunds_subtract_and_a_net_refund_is_dropped() -> None:
    weights = InteractionWeights(purchase=5, refund=-5)
    events = [
        Interaction("u1", "A", EventKind.PURCHASE, NOW),
        Interaction("u1", "A", EventKind.PURCHASE, NOW),
        Interaction("u1", "A", EventKind.REFUND, NOW),
        Interaction("u1", "B", EventKind.REFUND, NOW),  # its purchase predates the log
    ]
    assert build_matrix(events, weights, NOW).user_row("u1") == {"A": 5.0}
    kept = build_matrix(events, weights, NOW, keep_negative=True)
    assert kept.user_row("u1") == {"A": 5.0, "B": -5.0}


def test_indexes_are_stable_both_ways_and_extended_by_later_builds() -> None:
    items = IdIndex(["A", "B"])
    events = [
        Interaction("u1", "C", EventKind.VIEW, NOW),
        Interaction("u1", "A", EventKind.VIEW, NOW),
    ]
    data = build_matrix(events, InteractionWeights(), NOW, items=items)
    assert [data.items.index(i) for i in ("A", "B", "C")] == [0, 1, 2]
    assert data.items.id(2) == "C"
    assert data.items.index("Z") is None
    assert data.matrix.shape == (1, 3)
    assert data.user_row("nobody") == {}
