"""Business rules and context re-ranking, as pure functions over a scored candidate list.

Every function takes candidates best first and returns a new list best first; none of them
changes its input. :func:`apply_rules` runs them in the order the service needs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class Source(StrEnum):
    """The model or strategy that produced a candidate (the proto's ``Model``)."""

    COOCCURRENCE = "cooccurrence"
    ALS = "als"
    POPULAR = "popular"
    TRENDING = "trending"
    BLEND = "blend"


class ReasonKind(StrEnum):
    """Why an item is there (the proto's ``ReasonKind``)."""

    BECAUSE_YOU_INTERACTED = "because_you_interacted"
    SIMILAR_TASTE = "similar_taste"
    POPULAR = "popular"
    TRENDING = "trending"
    POPULAR_IN_SEGMENT = "popular_in_segment"
    POPULAR_IN_CONTEXT = "popular_in_context"
    SIMILAR_TO_ITEM = "similar_to_item"


@dataclass(frozen=True, slots=True)
class Reason:
    kind: ReasonKind
    related_item_id: str = ""
    segment_id: str = ""
    text: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    item_id: str
    score: float  # higher is better; comparable within one list only
    source: Source
    reasons: tuple[Reason, ...] = ()
    category: str = ""  # category path such as "Home/Candles"; "" when unknown


@dataclass(frozen=True, slots=True)
class Context:
    """The request's context (the proto's ``ServingContext``)."""

    device_type: str = ""
    local_hour: int | None = None
    locale: str = ""
    country: str = ""
    page: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class ContextBoost:
    """Multiply the score of items in ``category_prefix`` ("" = every item) when every
    condition that is set matches the context. ``hours`` is [start, end) in local hours and
    may wrap midnight: (22, 6) is the night."""

    multiplier: float
    category_prefix: str = ""
    device_type: str = ""
    hours: tuple[int, int] | None = None
    locale_prefix: str = ""
    country: str = ""

    def applies(self, context: Context, category: str) -> bool:
        if not in_category(category, self.category_prefix):
            return False
        if self.device_type and context.device_type != self.device_type:
            return False
        if self.country and context.country != self.country:
            return False
        if self.locale_prefix and not context.locale.lower().startswith(self.locale_prefix.lower()):
            return False
        if self.hours is not None:
            if context.local_hour is None:
                return False
            start, end = self.hours
            hour = context.local_hour
            inside = start <= hour < end if start <= end else hour >= start or hour < end
            if not inside:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Filters:
    """The request's business rules (the proto's ``Filters``)."""

    exclude_purchased: bool = False
    exclude_items: frozenset[str] = frozenset()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    max_per_category: int = 0  # 0 = no limit
    diversify: bool = False


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything re-ranking needs besides the candidates."""

    filters: Filters = field(default_factory=Filters)
    purchased: frozenset[str] = frozenset()  # only read when filters.exclude_purchased
    context: Context = field(default_factory=Context)
    boosts: tuple[ContextBoost, ...] = ()
    diversity_trade_off: float = 0.7  # MMR lambda: 1 = relevance only, 0 = diversity only


def in_category(category: str, prefix: str) -> bool:
    """Prefix match on whole path segments: "Home" holds "Home/Candles", not "Homeware"."""
    return not prefix or category == prefix or category.startswith(prefix.rstrip("/") + "/")


def exclude_items(candidates: Iterable[Candidate], items: Collection[str]) -> list[Candidate]:
    return [c for c in candidates if c.item_id not in items]


def exclude_purchased(
    candidates: Iterable[Candidate], purchased: Collection[str]
) -> list[Candidate]:
    """Leave out what the subject already bought (a separate name: it needs consent)."""
    return exclude_items(candidates, purchased)


def filter_categories(
    candidates: Iterable[Candidate], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Candidate]:
    """Keep items in one of ``include`` (all when empty) and in none of ``exclude``; an
    item of unknown category passes only when nothing is included explicitly."""
    return [
        c
        for c in candidates
        if (not include or any(in_category(c.category, p) for p in include))
        and not any(in_category(c.category, p) for p in exclude if p)
    ]


def limit_per_category(candidates: Iterable[Candidate], limit: int) -> list[Candidate]:
    """At most ``limit`` items of each category, the best ones (unknown categories are not
    limited: they are not one category). ``limit`` 0 keeps everything."""
    if limit <= 0:
        return list(candidates)
    taken: dict[str, int] = {}
    kept = []
    for candidate in candidates:
        if candidate.category:
            if taken.get(candidate.category, 0) >= limit:
                continue
            taken[candidate.category] = taken.get(candidate.category, 0) + 1
        kept.append(candidate)
    return kept


def category_similarity(a: str, b: str) -> float:
    """Share of path segments two categories have in common from the root, 0..1."""
    if not a or not b:
        return 0.0
    left, right = a.split("/"), b.split("/")
    shared = 0
    for x, y in zip(left, right, strict=False):
        if x != y:
            break
        shared += 1
    return shared / max(len(left), len(right))


def diversify(candidates: Sequence[Candidate], k: int, trade_off: float = 0.7) -> list[Candidate]:
    """Greedy maximal marginal relevance: pick, one at a time, the candidate maximising
    ``trade_off * relevance - (1 - trade_off) * max similarity to those picked``, relevance
    being the score scaled to 0..1 and similarity :func:`category_similarity`."""
    if not candidates:
        return []
    scores = [c.score for c in candidates]
    low, high = min(scores), max(scores)
    span = high - low or 1.0
    relevance = [(s - low) / span for s in scores]
    remaining = list(range(len(candidates)))
    picked: list[int] = []
    while remaining and len(picked) < k:
        best, best_value = remaining[0], float("-inf")
        for index in remaining:
            redundancy = max(
                (
                    category_similarity(candidates[index].category, candidates[p].category)
                    for p in picked
                ),
                default=0.0,
            )
            value = trade_off * relevance[index] - (1.0 - trade_off) * redundancy
            if value > best_value:  # strict: ties keep the better-ranked candidate
                best, best_value = index, value
        picked.append(best)
        remaining.remove(best)
    return [candidates[i] for i in picked]


def apply_context_boosts(
    candidates: Iterable[Candidate], context: Context, boosts: Sequence[ContextBoost]
) -> list[Candidate]:
    """Multiply each score by every boost that applies, then re-sort (stable on ties)."""
    boosted = []
    for candidate in candidates:
        factor = 1.0
        for boost in boosts:
            if boost.applies(context, candidate.category):
                factor *= boost.multiplier
        boosted.append(
            candidate if factor == 1.0 else replace(candidate, score=candidate.score * factor)
        )
    boosted.sort(key=lambda c: -c.score)
    return boosted


def apply_rules(candidates: Sequence[Candidate], rules: Rules, k: int) -> list[Candidate]:
    """Exclusions and category filters, then context boosts, then diversity or the
    per-category cap, then the first ``k``."""
    filters = rules.filters
    found = exclude_items(candidates, filters.exclude_items)
    if filters.exclude_purchased:
        found = exclude_purchased(found, rules.purchased)
    found = filter_categories(found, filters.include_categories, filters.exclude_categories)
    found = apply_context_boosts(found, rules.context, rules.boosts)
    found = limit_per_category(found, filters.max_per_category)
    if filters.diversify:
        found = diversify(found, k, rules.diversity_trade_off)
    return found[:k]
