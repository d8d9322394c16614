"""The served recommendation: a blend of the models, and the fallback chain around it.

1. A subject with history (stored, or items passed in the request): ALS, co-occurrence and
   popularity, each rank-normalised, combined with weights (:func:`blend`).
2. No usable history, but segments or a context: popular among the first segment, else in
   the first context group, that has data.
3. Nothing at all: popular everywhere.

A cold item in similar-items gets popular items of its category, else global popular.
Whatever the business rules remove is topped up from popularity, so an answer is short of
``k`` only when the catalogue is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from tailor_recommend.domain.cooccurrence import CooccurrenceModel
from tailor_recommend.domain.factorization import AlsModel
from tailor_recommend.domain.popularity import (
    GLOBAL,
    PopularityModel,
    category_group,
    segment_group,
)
from tailor_recommend.domain.reranking import (
    Candidate,
    Reason,
    ReasonKind,
    Rules,
    Source,
    apply_rules,
)

NO_RULES = Rules()


class Strategy(StrEnum):
    """Which step of the fallback chain answered."""

    BLEND = "blend"
    SEGMENT_POPULAR = "segment_popular"
    CONTEXT_POPULAR = "context_popular"
    GLOBAL_POPULAR = "global_popular"
    SIMILAR = "similar"
    CATEGORY_POPULAR = "category_popular"


@dataclass(frozen=True, slots=True)
class BlendWeights:
    als: float = 1.0
    cooccurrence: float = 1.0
    popular: float = 0.1

    def of(self, source: Source) -> float:
        return {
            Source.ALS: self.als,
            Source.COOCCURRENCE: self.cooccurrence,
            Source.POPULAR: self.popular,
        }.get(source, 0.0)


def rank_scores(candidates: Sequence[Candidate], depth: int) -> dict[str, float]:
    """``1 - rank / depth`` (1 for the first, 0 from ``depth`` on): scores of different
    models are not comparable, their ranks are."""
    return {c.item_id: max(0.0, 1.0 - rank / depth) for rank, c in enumerate(candidates)}


def blend(
    lists: Mapping[Source, Sequence[Candidate]],
    weights: BlendWeights,
    *,
    depth: int | None = None,
) -> list[Candidate]:
    """Sum of weighted rank scores over the lists, best first. An item keeps the reasons of
    every list it is in, the largest contribution first, and that list as its source."""
    depth = depth or max((len(found) for found in lists.values()), default=1) or 1
    totals: dict[str, float] = {}
    parts: dict[str, list[tuple[float, Candidate]]] = {}
    for source, found in lists.items():
        weight = weights.of(source)
        if weight <= 0.0:
            continue
        for rank, candidate in enumerate(found):
            contribution = weight * max(0.0, 1.0 - rank / depth)
            totals[candidate.item_id] = totals.get(candidate.item_id, 0.0) + contribution
            parts.setdefault(candidate.item_id, []).append((contribution, candidate))
    blended = []
    for item, total in totals.items():
        ordered = sorted(parts[item], key=lambda part: -part[0])
        top = ordered[0][1]
        reasons = tuple(reason for _, c in ordered for reason in c.reasons)
        blended.append(Candidate(item, total, top.source, reasons, top.category))
    blended.sort(key=lambda c: (-c.score, c.item_id))
    return blended


@dataclass(frozen=True, slots=True)
class Subject:
    """What the chain may use about the subject: empty history when not personalised."""

    user_id: str | None = None
    history: Mapping[str, float] = field(default_factory=dict)  # item -> weight
    context_items: Sequence[str] = ()  # the request's items: seed even without consent
    segments: Sequence[str] = ()  # segment ids, strongest first
    context_groups: Sequence[str] = ()  # popularity group keys, most specific first


@dataclass(frozen=True, slots=True)
class Answer:
    items: list[Candidate]
    strategy: Strategy
    item_known: bool = True  # similar-items only: False for a cold item


@dataclass
class Recommender:
    """The models the service holds now (any may be missing) and how to combine them."""

    cooccurrence: CooccurrenceModel | None = None
    als: AlsModel | None = None
    popularity: PopularityModel | None = None
    categories: Mapping[str, str] = field(default_factory=dict)
    weights: BlendWeights = field(default_factory=BlendWeights)
    popular_window: timedelta = timedelta(days=30)
    candidates_per_model: int = 100
    max_history: int = 50  # heaviest history items scored: bounds the request's cost

    # --- per model -----------------------------------------------------------------------

    def cooccurrence_candidates(
        self, history: Mapping[str, float], seeds: Collection[str], depth: int
    ) -> list[Candidate]:
        """Co-occurrence's best ``depth`` for a history; ``seeds`` are the request's items."""
        if self.cooccurrence is None:
            return []
        found = self.cooccurrence.recommend(history, depth)
        return [
            Candidate(
                s.item_id,
                s.score,
                Source.COOCCURRENCE,
                (self._because(s.because, s.because in seeds),),
                self.categories.get(s.item_id, ""),
            )
            for s in found
        ]

    @staticmethod
    def _because(item_id: str, requested: bool) -> Reason:
        if requested:
            return Reason(ReasonKind.SIMILAR_TO_ITEM, item_id, text=f"goes with {item_id}")
        return Reason(
            ReasonKind.BECAUSE_YOU_INTERACTED,
            item_id,
            text=f"because you interacted with {item_id}",
        )

    def als_candidates(
        self, user_id: str | None, history: Mapping[str, float], depth: int
    ) -> list[Candidate]:
        model = self.als
        if model is None:
            return []
        known = {
            i: w
            for i, w in ((model.items.index(h), w) for h, w in history.items())
            if i is not None
        }
        row = model.users.index(user_id) if user_id is not None else None
        if row is not None:
            found = model.recommend(row, depth, set(known))
        elif known:
            found = model.recommend_for_history(known, depth)
        else:
            return []
        reason = Reason(ReasonKind.SIMILAR_TASTE, text="similar to what you like")
        return [
            Candidate(
                model.items.id(i),
                score,
                Source.ALS,
                (reason,),
                self.categories.get(model.items.id(i), ""),
            )
            for i, score in found
        ]

    def popular(
        self,
        k: int,
        now: datetime,
        *,
        group: str = GLOBAL,
        reason: Reason | None = None,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        if self.popularity is None:
            return []
        reason = reason or Reason(ReasonKind.POPULAR, text="popular")
        return [
            Candidate(
                p.item_id, p.score, Source.POPULAR, (reason,), self.categories.get(p.item_id, "")
            )
            for p in self.popularity.popular(
                k, now, self.popular_window, group=group, exclude=exclude
            )
        ]

    # --- the chain -----------------------------------------------------------------------

    def recommend(self, subject: Subject, k: int, now: datetime, rules: Rules = NO_RULES) -> Answer:
        """Up to ``k`` items for the subject, best first, after the business rules."""
        depth = max(self.candidates_per_model, 3 * k)
        history = dict(sorted(subject.history.items(), key=lambda p: -p[1])[: self.max_history])
        seed_weight = max(history.values(), default=1.0)
        for item in subject.context_items:  # the page's items count as much as the best seen
            history[item] = max(history.get(item, 0.0), seed_weight)
        if history:
            als = self.als_candidates(subject.user_id, history, depth)
            # A list with no weight cannot move the blend: co-occurrence is scored (its cost
            # is most of a request's) only when it counts, or when ALS has nothing to say.
            cooccurrence = (
                self.cooccurrence_candidates(history, set(subject.context_items), depth)
                if self.weights.cooccurrence > 0 or not als
                else []
            )
            lists = {Source.ALS: als, Source.COOCCURRENCE: cooccurrence}
            if any(lists.values()):
                lists[Source.POPULAR] = self.popular(depth, now, exclude=history)
                blended = [
                    c for c in blend(lists, self.weights, depth=depth) if c.item_id not in history
                ]
                return Answer(self._fill(blended, rules, k, now, exclude=history), Strategy.BLEND)
        for segment in subject.segments:
            group = segment_group(segment)
            if self.popularity is not None and self.popularity.has_group(group):
                reason = Reason(
                    ReasonKind.POPULAR_IN_SEGMENT, segment_id=segment, text=f"popular in {segment}"
                )
                found = self.popular(depth, now, group=group, reason=reason)
                if found:
                    return Answer(self._fill(found, rules, k, now), Strategy.SEGMENT_POPULAR)
        for group in subject.context_groups:
            if self.popularity is not None and self.popularity.has_group(group):
                reason = Reason(ReasonKind.POPULAR_IN_CONTEXT, text=f"popular in {group}")
                found = self.popular(depth, now, group=group, reason=reason)
                if found:
                    return Answer(self._fill(found, rules, k, now), Strategy.CONTEXT_POPULAR)
        return Answer(self._fill([], rules, k, now), Strategy.GLOBAL_POPULAR)

    def similar_items(self, item_id: str, k: int, now: datetime, rules: Rules = NO_RULES) -> Answer:
        """Items like ``item_id``: co-occurrence, topped up by factor similarity; a cold item
        gets its category's popular items, else global popular (``item_known`` False)."""
        depth = max(self.candidates_per_model, 3 * k)
        reason = Reason(ReasonKind.SIMILAR_TO_ITEM, item_id, text=f"goes with {item_id}")
        found: list[Candidate] = []
        if self.cooccurrence is not None:
            found = [
                Candidate(
                    n.item_id,
                    n.score,
                    Source.COOCCURRENCE,
                    (reason,),
                    self.categories.get(n.item_id, ""),
                )
                for n in self.cooccurrence.similar(item_id, depth)
            ]
        als_index = self.als.items.index(item_id) if self.als is not None else None
        if self.als is not None and als_index is not None:
            seen = {c.item_id for c in found}
            # Below every co-occurrence score: factors only fill what co-counts leave open.
            floor = min((c.score for c in found), default=1.0)
            for rank, (index, _) in enumerate(self.als.similar_items(als_index, depth)):
                other = self.als.items.id(index)
                if other not in seen:
                    score = floor * (1.0 - (rank + 1) / (depth + 1))
                    found.append(
                        Candidate(
                            other, score, Source.ALS, (reason,), self.categories.get(other, "")
                        )
                    )
        if found:
            return Answer(self._fill(found, rules, k, now, exclude={item_id}), Strategy.SIMILAR)
        category = self.categories.get(item_id, "")
        group = category_group(category)
        if category and self.popularity is not None and self.popularity.has_group(group):
            cold = Reason(ReasonKind.POPULAR, text=f"popular in {category}; {item_id} is new")
            popular = self.popular(depth, now, group=group, reason=cold, exclude={item_id})
            return Answer(
                self._fill(popular, rules, k, now, exclude={item_id}),
                Strategy.CATEGORY_POPULAR,
                item_known=False,
            )
        return Answer(
            self._fill([], rules, k, now, exclude={item_id}),
            Strategy.GLOBAL_POPULAR,
            item_known=False,
        )

    def _fill(
        self,
        found: Sequence[Candidate],
        rules: Rules,
        k: int,
        now: datetime,
        exclude: Collection[str] = (),
    ) -> list[Candidate]:
        """The rules over ``found``; when they leave fewer than ``k``, again over ``found``
        followed by global popular items scored below all of it (one pass, so a
        per-category cap counts both)."""
        kept = apply_rules(found, rules, k)
        if len(kept) >= k:
            return kept
        taken = {c.item_id for c in found} | set(exclude)
        depth = max(self.candidates_per_model, 3 * k)
        floor = min((c.score for c in found), default=1.0)
        extra = [
            replace(c, score=floor * (1.0 - (rank + 1) / (depth + 1)))
            for rank, c in enumerate(self.popular(depth, now, exclude=taken))
        ]
        return apply_rules([*found, *extra], rules, k)
