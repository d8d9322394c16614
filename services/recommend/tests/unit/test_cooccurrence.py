from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor_recommend.domain.cooccurrence import CooccurrenceModel
from tailor_recommend.domain.interactions import (
    EventKind,
    Interaction,
    InteractionWeights,
    build_matrix,
)

T0 = datetime(2011, 1, 1, tzinfo=UTC)


def hand_model() -> CooccurrenceModel:
    # u1: A=1 B=1; u2: A=1 B=2 C=1; u3: C=3
    model = CooccurrenceModel()
    for user, item, weight in [
        ("u1", "A", 1),
        ("u1", "B", 1),
        ("u2", "A", 1),
        ("u2", "B", 2),
        ("u2", "C", 1),
        ("u3", "C", 3),
    ]:
        model.add(user, item, weight, T0)
    return model


def test_scores_are_the_cosine_of_weighted_columns_computed_by_hand() -> None:
    model = hand_model()
    # C[A][B] = 1*1 + 1*2 = 3, N[A] = 2, N[B] = 5
    assert model.similarity("A", "B") == pytest.approx(3 / math.sqrt(10))
    assert model.similarity("A", "C") == pytest.approx(1 / math.sqrt(2 * 10))
    assert model.similarity("B", "C") == pytest.approx(2 / math.sqrt(5 * 10))
    assert [(n.item_id, round(n.score, 4)) for n in model.similar("A", 5)] == [
        ("B", 0.9487),
        ("C", 0.2236),
    ]
    assert [n.item_id for n in model.similar("C", 5)] == ["B", "A"]


def test_recommend_sums_similarities_and_names_the_strongest_history_item() -> None:
    model = hand_model()
    found = model.recommend({"A": 1.0, "C": 1.0}, 5)
    assert [s.item_id for s in found] == ["B"]  # history items are never suggested
    assert found[0].score == pytest.approx(3 / math.sqrt(10) + 2 / math.sqrt(50))
    assert found[0].because == "A"
    assert model.recommend({"A": 1.0}, 5, exclude={"B"})[0].item_id == "C"


def test_a_refund_takes_its_purchase_back() -> None:
    model = hand_model()
    model.add("u2", "B", -2, T0)
    assert model.similarity("A", "B") == pytest.approx(1 / math.sqrt(2 * 1))
    assert model.similarity("B", "C") == 0.0
    model.add("u1", "B", -5, T0)  # more than was bought: floored at zero
    assert model.similarity("A", "B") == 0.0
    assert "B" not in model
    assert model.history("u1") == {"A": 1.0}


def test_unknown_item_has_no_neighbours() -> None:
    assert hand_model().similar("Z", 3) == []
    assert hand_model().recommend({"Z": 1.0}, 3) == []


def batch_cosine(
    events: list[Interaction], half_life: timedelta | None
) -> dict[tuple[str, str], float]:
    weights = InteractionWeights(view=1, add_to_cart=3, purchase=5, half_life=half_life)
    now = max(e.at for e in events)
    data = build_matrix(events, weights, now)
    x = data.matrix.toarray().astype(np.float64)
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    found = {}
    for i in range(gram.shape[0]):
        for j in range(gram.shape[0]):
            if i != j and gram[i, j] > 0:
                found[(data.items.id(i), data.items.id(j))] = gram[i, j] / (norms[i] * norms[j])
    return found


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.sampled_from(["A", "B", "C", "D", "E"]),
        st.sampled_from([EventKind.VIEW, EventKind.ADD_TO_CART, EventKind.PURCHASE]),
        st.integers(min_value=0, max_value=24 * 60),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(raw=events_strategy, decay=st.booleans(), seed=st.integers(0, 1000))
def test_incremental_updates_equal_a_batch_build(
    raw: list[tuple[str, str, EventKind, int]], decay: bool, seed: int
) -> None:
    half_life = timedelta(hours=6) if decay else None
    events = [Interaction(u, i, kind, T0 + timedelta(minutes=m)) for u, i, kind, m in raw]
    random.Random(seed).shuffle(events)  # positive weights: arrival order does not matter
    weights = InteractionWeights(half_life=half_life)
    model = CooccurrenceModel(half_life=half_life, max_neighbours=100, max_history=100)
    for event in events:
        model.add(event.user_id, event.item_id, weights.base(event.kind), event.at)
    expected = batch_cosine(events, half_life)
    items = {e.item_id for e in events}
    for a in items:
        for b in items - {a}:
            assert model.similarity(a, b) == pytest.approx(
                expected.get((a, b), 0.0), rel=1e-5, abs=1e-7
            )


def test_decay_survives_a_rebase_of_the_epoch() -> None:
    half_life = timedelta(hours=1)
    events = [
        Interaction(
            f"u{n % 7}",
            "ABCDEF"[n % 6 if n % 3 else n % 2],
            EventKind.PURCHASE,
            T0 + timedelta(hours=n),
        )
        for n in range(300)  # 300 half-lives: past the rebase threshold
    ]
    model = CooccurrenceModel(half_life=half_life)
    for event in events:
        model.add(event.user_id, event.item_id, 5.0, event.at)
    expected = batch_cosine(events, half_life)
    for (a, b), score in expected.items():
        assert model.similarity(a, b) == pytest.approx(score, rel=1e-6)


def test_neighbours_per_item_are_capped() -> None:
    model = CooccurrenceModel(max_neighbours=3, max_history=1000)
    for item in range(50):
        model.add("u1", f"i{item}", 1.0, T0)
        model.add("u2", f"i{item}", 1.0 + item, T0)
    assert all(model.neighbour_count(f"i{n}") <= 6 for n in range(50))
    assert len(model.similar("i0", 10)) <= 6


def test_history_per_user_is_capped_to_the_most_recent() -> None:
    model = CooccurrenceModel(max_history=2)
    for item in ["A", "B", "C"]:
        model.add("u1", item, 1.0, T0)
    assert list(model.history("u1")) == ["B", "C"]
    model.add("u1", "D", 1.0, T0)
    assert model.similarity("A", "D") == 0.0  # A had left the history
    assert model.similarity("C", "D") > 0.0
