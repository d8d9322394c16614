from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tailor_recommend.domain.reranking import (
    Candidate,
    Context,
    ContextBoost,
    Filters,
    Rules,
    Source,
    apply_context_boosts,
    apply_rules,
    category_similarity,
    diversify,
    exclude_items,
    exclude_purchased,
    filter_categories,
    in_category,
    limit_per_category,
)


def ranked(*specs: tuple[str, str]) -> list[Candidate]:
    """Candidates best first, scores 10, 9, 8, ..."""
    return [
        Candidate(item, 10.0 - n, Source.BLEND, category=category)
        for n, (item, category) in enumerate(specs)
    ]


LIST = ranked(
    ("a", "Home/Candles"),
    ("b", "Home/Candles"),
    ("c", "Home/Kitchen"),
    ("d", "Garden"),
    ("e", "Home/Candles"),
    ("f", ""),
)


def ids(candidates: list[Candidate]) -> list[str]:
    return [c.item_id for c in candidates]


def test_exclusions_drop_bought_and_given_items_and_keep_the_order() -> None:
    assert ids(exclude_purchased(LIST, {"a", "d"})) == ["b", "c", "e", "f"]
    assert ids(exclude_items(LIST, {"f"})) == ["a", "b", "c", "d", "e"]


def test_category_filters_match_whole_path_prefixes() -> None:
    assert ids(filter_categories(LIST, include=["Home"])) == ["a", "b", "c", "e"]
    assert ids(filter_categories(LIST, exclude=["Home/Candles"])) == ["c", "d", "f"]
    assert not in_category("Homeware", "Home")
    assert in_category("Home/Candles", "Home/")


def test_at_most_n_per_category_keeps_the_best_of_each() -> None:
    assert ids(limit_per_category(LIST, 1)) == ["a", "c", "d", "f"]
    assert ids(limit_per_category(LIST, 0)) == ids(LIST)


def test_diversify_interleaves_categories() -> None:
    # relevance a=1 b=.8 c=.6 d=.4 f=0; at 0.3, d (.12) beats c (.18 - .7 * .5) and b.
    assert ids(diversify(LIST, 4, trade_off=0.3)) == ["a", "d", "f", "c"]
    # trade-off 1 is relevance only: the order is unchanged.
    assert ids(diversify(LIST, 4, trade_off=1.0)) == ["a", "b", "c", "d"]


def test_category_similarity_counts_shared_path_segments() -> None:
    assert category_similarity("Home/Candles", "Home/Candles") == 1.0
    assert category_similarity("Home/Candles", "Home/Kitchen") == 0.5
    assert category_similarity("Home", "Garden") == 0.0
    assert category_similarity("", "Garden") == 0.0


def test_context_boosts_apply_when_every_condition_matches() -> None:
    evening_mobile = Context(device_type="mobile", local_hour=23, locale="en-GB")
    boosts = (
        ContextBoost(3.0, category_prefix="Garden", device_type="mobile"),
        ContextBoost(2.0, category_prefix="Home/Kitchen", hours=(22, 6)),  # wraps midnight
        ContextBoost(100.0, category_prefix="Home/Candles", locale_prefix="fr"),
    )
    found = apply_context_boosts(LIST, evening_mobile, boosts)
    assert ids(found) == ["d", "c", "a", "b", "e", "f"]  # d 7*3=21, c 8*2=16
    assert found[0].score == 21.0
    assert ids(apply_context_boosts(LIST, Context(), boosts)) == ids(LIST)


def test_hours_are_unknown_without_a_local_hour() -> None:
    assert not ContextBoost(2.0, hours=(0, 24)).applies(Context(), "Garden")
    assert ContextBoost(2.0, hours=(9, 17)).applies(Context(local_hour=9), "Garden")
    assert not ContextBoost(2.0, hours=(9, 17)).applies(Context(local_hour=17), "Garden")


def test_apply_rules_runs_every_rule_and_cuts_to_k() -> None:
    rules = Rules(
        filters=Filters(
            exclude_purchased=True,
            exclude_items=frozenset({"c"}),
            exclude_categories=("Garden",),
            max_per_category=1,
        ),
        purchased=frozenset({"a"}),
    )
    assert ids(apply_rules(LIST, rules, 5)) == ["b", "f"]
    # exclude_purchased off: the purchases are not read
    assert ids(apply_rules(LIST, Rules(purchased=frozenset({"a"})), 2)) == ["a", "b"]


categories = st.sampled_from(["A", "A/x", "A/y", "B", "B/z", ""])
candidate_lists = st.lists(
    st.tuples(st.text("abcdefgh", min_size=1, max_size=3), categories), unique_by=lambda t: t[0]
).map(lambda specs: ranked(*specs))


@given(candidate_lists, st.integers(1, 6))
def test_a_category_cap_is_never_exceeded(candidates: list[Candidate], limit: int) -> None:
    kept = limit_per_category(candidates, limit)
    for category in {c.category for c in kept if c.category}:
        assert sum(c.category == category for c in kept) <= limit
    assert ids(kept) == [c for c in ids(candidates) if c in set(ids(kept))]  # order kept


@given(candidate_lists, st.integers(1, 10), st.floats(0.0, 1.0))
def test_diversify_returns_distinct_candidates_from_the_list(
    candidates: list[Candidate], k: int, trade_off: float
) -> None:
    found = diversify(candidates, k, trade_off)
    assert len(found) == min(k, len(candidates))
    assert len(set(ids(found))) == len(found)
    if candidates:
        assert found[0] == candidates[0]  # the best is always picked first
