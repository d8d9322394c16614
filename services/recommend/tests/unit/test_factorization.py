from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from tailor_recommend.domain.factorization import AlsModel, AlsParams, top_items, train_als
from tailor_recommend.domain.interactions import (
    EventKind,
    Interaction,
    InteractionMatrix,
    InteractionWeights,
    build_matrix,
)

NOW = datetime(2011, 6, 1, tzinfo=UTC)
PARAMS = AlsParams(factors=4, regularization=0.01, iterations=20, alpha=2.0, random_state=7)


def blocks() -> InteractionMatrix:
    """Users b0..b9 buy items x0..x4 and y-users items y0..y4; user n skips item n % 5."""
    events = []
    for block in ("x", "y"):
        for user in range(10):
            for item in range(5):
                if item != user % 5:
                    events.append(
                        Interaction(
                            f"{block}-user{user}", f"{block}{item}", EventKind.PURCHASE, NOW
                        )
                    )
    return build_matrix(events, InteractionWeights(purchase=1.0), NOW)


@pytest.fixture(scope="module")
def model() -> AlsModel:
    return train_als(blocks(), PARAMS, version="als-test-1", trained_at=NOW)


def test_als_recommends_the_missing_item_of_the_users_own_block(model: AlsModel) -> None:
    data = blocks()
    for user in ("x-user0", "x-user3", "y-user1"):
        bought = data.user_row(user)
        found = top_items(model, user, 1, exclude=list(bought))
        block = user[0]
        missing = f"{block}{int(user[-1]) % 5}"
        assert found == [missing]
    assert top_items(model, "nobody", 3) == []


def test_similar_items_stay_in_their_block(model: AlsModel) -> None:
    index = model.items.index("x0")
    assert index is not None
    found = [model.items.id(i) for i, _ in model.similar_items(index, 4)]
    assert sorted(found) == ["x1", "x2", "x3", "x4"]


def test_fold_in_of_a_new_history_favours_its_block(model: AlsModel) -> None:
    history = {model.items.index("y0"): 1.0, model.items.index("y1"): 1.0}
    known = {i: w for i, w in history.items() if i is not None}
    found = [model.items.id(i) for i, _ in model.recommend_for_history(known, 3)]
    assert sorted(found) == ["y2", "y3", "y4"]


def test_training_is_deterministic_for_a_random_state() -> None:
    first = train_als(blocks(), PARAMS, version="a", trained_at=NOW)
    second = train_als(blocks(), PARAMS, version="b", trained_at=NOW)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)


def test_artifact_round_trips_through_bytes(model: AlsModel) -> None:
    model.metrics["ndcg@10"] = 0.25
    loaded = AlsModel.from_bytes(model.to_bytes())
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.users == model.users
    assert loaded.items == model.items
    assert loaded.params == model.params
    assert (loaded.version, loaded.trained_at, loaded.interactions) == ("als-test-1", NOW, 80)
    assert loaded.metrics == {"ndcg@10": 0.25}
    assert loaded.recommend(0, 5) == model.recommend(0, 5)


def test_an_unknown_artifact_format_is_refused(model: AlsModel) -> None:
    with np.load(io.BytesIO(model.to_bytes())) as arrays:
        parts = {name: arrays[name] for name in arrays.files}
    metadata = json.loads(parts["metadata"].tobytes())
    metadata["format"] = 9
    parts["metadata"] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **parts)
    with pytest.raises(ValueError, match="format"):
        AlsModel.from_bytes(buffer.getvalue())


def test_an_empty_matrix_cannot_be_trained() -> None:
    empty = build_matrix([], InteractionWeights(), NOW)
    with pytest.raises(ValueError, match="empty"):
        train_als(empty, PARAMS, version="x", trained_at=NOW)
