from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tailor_recommend.domain.blending import (
    BlendWeights,
    Recommender,
    Strategy,
    Subject,
    blend,
    rank_scores,
)
from tailor_recommend.domain.cooccurrence import CooccurrenceModel
from tailor_recommend.domain.popularity import PopularityModel, category_group, segment_group
from tailor_recommend.domain.reranking import (
    Candidate,
    Filters,
    Reason,
    ReasonKind,
    Rules,
    Source,
)

NOW = datetime(2011, 6, 1, tzinfo=UTC)
CATEGORIES = {
    "mug": "Home/Kitchen",
    "teapot": "Home/Kitchen",
    "candle": "Home/Candles",
    "lantern": "Home/Candles",
    "spade": "Garden",
    "new-kettle": "Home/Kitchen",
}


def reasoned(item: str, score: float, source: Source, kind: ReasonKind) -> Candidate:
    return Candidate(item, score, source, (Reason(kind),))


def test_rank_scores_fall_linearly_to_zero_at_depth() -> None:
    found = [reasoned(i, 0.0, Source.ALS, ReasonKind.SIMILAR_TASTE) for i in "abc"]
    assert rank_scores(found, 4) == {"a": 1.0, "b": 0.75, "c": 0.5}


def test_blend_adds_weighted_rank_scores_and_keeps_the_strongest_reason_first() -> None:
    lists = {
        Source.ALS: [
            reasoned("x", 9.0, Source.ALS, ReasonKind.SIMILAR_TASTE),
            reasoned("y", 8.0, Source.ALS, ReasonKind.SIMILAR_TASTE),
        ],
        Source.COOCCURRENCE: [
            reasoned("y", 0.9, Source.COOCCURRENCE, ReasonKind.BECAUSE_YOU_INTERACTED),
            reasoned("z", 0.1, Source.COOCCURRENCE, ReasonKind.BECAUSE_YOU_INTERACTED),
        ],
    }
    found = blend(lists, BlendWeights(als=1.0, cooccurrence=1.0, popular=0.0), depth=2)
    # y: 0.5 (ALS rank 2) + 1.0 (co-occurrence rank 1); x: 1.0; z: 0.5
    assert [(c.item_id, c.score) for c in found] == [("y", 1.5), ("x", 1.0), ("z", 0.5)]
    assert found[0].source is Source.COOCCURRENCE
    assert [r.kind for r in found[0].reasons] == [
        ReasonKind.BECAUSE_YOU_INTERACTED,
        ReasonKind.SIMILAR_TASTE,
    ]
    only_als = blend(lists, BlendWeights(als=1.0, cooccurrence=0.0), depth=2)
    assert [c.item_id for c in only_als] == ["x", "y"]


def recommender() -> Recommender:
    cooccurrence = CooccurrenceModel()
    popularity = PopularityModel()
    baskets = {
        "ann": ["mug", "teapot"],
        "bob": ["mug", "teapot", "candle"],
        "cat": ["candle", "lantern"],
        "dan": ["spade", "lantern"],
    }
    for user, items in baskets.items():
        for item in items:
            cooccurrence.add(user, item, 5.0, NOW - timedelta(days=1))
            groups = [category_group(CATEGORIES[item])]
            if user in ("cat", "dan"):
                groups.append(segment_group("gardeners"))
            if user == "ann":
                groups.append("country:FR")
            popularity.add(item, 5.0, NOW - timedelta(days=1), groups)
    popularity.add("spade", 50.0, NOW - timedelta(days=2), [category_group("Garden")])
    return Recommender(
        cooccurrence=cooccurrence,
        popularity=popularity,
        categories=CATEGORIES,
        weights=BlendWeights(als=1.0, cooccurrence=1.0, popular=0.1),
    )


def test_a_known_user_gets_the_blend_with_because_reasons() -> None:
    answer = recommender().recommend(Subject("ann", history={"mug": 5.0, "teapot": 5.0}), 3, NOW)
    assert answer.strategy is Strategy.BLEND
    first = answer.items[0]
    assert first.item_id == "candle"
    assert first.reasons[0].kind is ReasonKind.BECAUSE_YOU_INTERACTED
    assert first.reasons[0].related_item_id in {"mug", "teapot"}
    assert not {"mug", "teapot"} & {c.item_id for c in answer.items}
    assert len(answer.items) == 3  # topped up from popularity


def test_request_items_seed_the_blend_without_stored_history() -> None:
    answer = recommender().recommend(Subject(context_items=["lantern"]), 2, NOW)
    assert answer.strategy is Strategy.BLEND
    assert answer.items[0].reasons[0].kind is ReasonKind.SIMILAR_TO_ITEM
    assert answer.items[0].reasons[0].related_item_id == "lantern"


def test_a_new_user_in_a_segment_gets_the_segments_popular_items() -> None:
    answer = recommender().recommend(Subject("new", segments=["unknown", "gardeners"]), 2, NOW)
    assert answer.strategy is Strategy.SEGMENT_POPULAR
    assert {c.item_id for c in answer.items} <= {"candle", "lantern", "spade"}
    assert answer.items[0].item_id == "lantern"  # bought by both gardeners
    assert answer.items[0].reasons[0] == Reason(
        ReasonKind.POPULAR_IN_SEGMENT, segment_id="gardeners", text="popular in gardeners"
    )


def test_a_new_user_with_a_context_gets_the_contexts_popular_items() -> None:
    subject = Subject("new", context_groups=["country:DE", "country:FR"])
    answer = recommender().recommend(subject, 2, NOW)
    assert answer.strategy is Strategy.CONTEXT_POPULAR
    assert {c.item_id for c in answer.items} == {"mug", "teapot"}
    assert answer.items[0].reasons[0].kind is ReasonKind.POPULAR_IN_CONTEXT


def test_a_cold_everything_gets_global_popular_and_no_models_an_empty_list() -> None:
    answer = recommender().recommend(Subject("new", history={"never-seen": 1.0}), 2, NOW)
    assert answer.strategy is Strategy.GLOBAL_POPULAR
    assert [c.item_id for c in answer.items] == ["spade", "candle"]  # 55, then 10 (tie by id)
    assert answer.items[0].reasons[0].kind is ReasonKind.POPULAR
    empty = Recommender().recommend(Subject("new"), 5, NOW)
    assert (empty.items, empty.strategy) == ([], Strategy.GLOBAL_POPULAR)


def test_similar_items_of_a_known_item_come_from_co_occurrence() -> None:
    answer = recommender().similar_items("mug", 1, NOW)
    assert answer.item_known
    assert answer.strategy is Strategy.SIMILAR
    assert answer.items[0].item_id == "teapot"
    assert answer.items[0].reasons[0].kind is ReasonKind.SIMILAR_TO_ITEM


def test_a_cold_item_gets_its_categorys_popular_items_else_global() -> None:
    answer = recommender().similar_items("new-kettle", 2, NOW)
    assert not answer.item_known
    assert answer.strategy is Strategy.CATEGORY_POPULAR
    assert {c.item_id for c in answer.items} == {"mug", "teapot"}
    uncategorised = recommender().similar_items("mystery", 1, NOW)
    assert not uncategorised.item_known
    assert uncategorised.strategy is Strategy.GLOBAL_POPULAR
    assert [c.item_id for c in uncategorised.items] == ["spade"]


def test_rules_apply_to_the_answer_and_the_top_up() -> None:
    rules = Rules(
        filters=Filters(exclude_purchased=True, exclude_categories=("Garden",)),
        purchased=frozenset({"candle"}),
    )
    answer = recommender().recommend(Subject("ann", history={"mug": 5.0}), 5, NOW, rules)
    found = [c.item_id for c in answer.items]
    assert "candle" not in found
    assert "spade" not in found
    assert found[0] == "teapot"
    assert sorted(found) == ["lantern", "teapot"]  # all that is left


@pytest.mark.parametrize("k", [1, 3, 10])
def test_never_more_than_k(k: int) -> None:
    assert len(recommender().recommend(Subject("x"), k, NOW).items) <= k
