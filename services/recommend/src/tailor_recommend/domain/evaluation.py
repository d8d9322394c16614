"""Offline evaluation: a temporal split of an interaction log and ranking metrics.

The split trains on everything before a cutoff and tests on what each user bought after
it — the way the service is used (the past predicts the future), unlike a random split,
which leaks tomorrow's popularity into the training set. A test user must be in the
training period and have bought, after the cutoff, at least one item that they had not
bought before it and that the catalogue of the training period holds (no model here can
recommend an item it never saw; how many test purchases that drops is reported).
Recommendations leave out the user's training purchases, as the service does with
``exclude_purchased``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from tailor_recommend.domain.interactions import EventKind, Interaction


def hit_rate(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 when any of the first ``k`` is relevant, else 0."""
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def ndcg(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain NDCG@k: sum of 1/log2(rank + 1) over relevant items in the first ``k``
    (rank from 1), over the same sum for the ideal ranking of min(k, |relevant|) hits."""
    if not relevant:
        return 0.0
    gained = sum(
        1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant
    )
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return gained / ideal


def recall(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items found in the first ``k``."""
    if not relevant:
        return 0.0
    return sum(1 for item in ranked[:k] if item in relevant) / len(relevant)


def coverage(lists: Iterable[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in anyone's first ``k``."""
    if catalogue_size <= 0:
        return 0.0
    shown = {item for ranked in lists for item in ranked[:k]}
    return len(shown) / catalogue_size


def popularity_percentiles(counts: Mapping[str, float]) -> dict[str, float]:
    """Each item's popularity percentile, 0..1: the share of catalogue items strictly less
    popular than it plus half of those as popular (so ties share a mid value)."""
    ordered = sorted(counts.values())
    size = len(ordered)
    found: dict[str, float] = {}
    for item, count in counts.items():
        below = bisect_left(ordered, count)
        equal = bisect_right(ordered, count) - below
        found[item] = (below + 0.5 * equal) / size
    return found


def mean_percentile(
    lists: Iterable[Sequence[str]], percentiles: Mapping[str, float], k: int
) -> float:
    """Mean popularity percentile of every recommended item (first ``k`` of each list)."""
    values = [percentiles.get(item, 0.0) for ranked in lists for item in ranked[:k]]
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class TemporalSplit:
    cutoff: datetime
    end: datetime | None
    train: list[Interaction]
    targets: dict[str, frozenset[str]]  # test user -> new items bought in [cutoff, end)
    bought: dict[str, frozenset[str]]  # test user -> items bought before the cutoff
    catalogue: frozenset[str]  # items with an interaction before the cutoff
    dropped_unseen: int  # test (user, item) pairs dropped: item not in the catalogue
    dropped_repeat: int  # test (user, item) pairs dropped: bought before the cutoff

    @property
    def test_pairs(self) -> int:
        return sum(len(items) for items in self.targets.values())


def temporal_split(
    interactions: Iterable[Interaction], cutoff: datetime, end: datetime | None = None
) -> TemporalSplit:
    """Train on interactions before ``cutoff``; test on purchases in [cutoff, end)."""
    train: list[Interaction] = []
    later: list[Interaction] = []
    for interaction in interactions:
        if interaction.at < cutoff:
            train.append(interaction)
        elif (end is None or interaction.at < end) and interaction.kind is EventKind.PURCHASE:
            later.append(interaction)
    catalogue = frozenset(i.item_id for i in train)
    users = {i.user_id for i in train}
    bought_before: dict[str, set[str]] = {}
    for interaction in train:
        if interaction.kind is EventKind.PURCHASE:
            bought_before.setdefault(interaction.user_id, set()).add(interaction.item_id)
    pairs = {(i.user_id, i.item_id) for i in later if i.user_id in users}
    targets: dict[str, set[str]] = {}
    unseen = repeat = 0
    for user, item in pairs:
        if item in bought_before.get(user, ()):
            repeat += 1
        elif item not in catalogue:
            unseen += 1
        else:
            targets.setdefault(user, set()).add(item)
    return TemporalSplit(
        cutoff=cutoff,
        end=end,
        train=train,
        targets={user: frozenset(items) for user, items in targets.items()},
        bought={user: frozenset(bought_before.get(user, ())) for user in targets},
        catalogue=catalogue,
        dropped_unseen=unseen,
        dropped_repeat=repeat,
    )


@dataclass(frozen=True)
class Metrics:
    hr10: float
    ndcg10: float
    recall20: float
    coverage10: float
    popularity10: float  # mean popularity percentile of recommended items, 0..1
    users: int

    def as_dict(self) -> dict[str, float]:
        return {
            "hr@10": self.hr10,
            "ndcg@10": self.ndcg10,
            "recall@20": self.recall20,
            "coverage@10": self.coverage10,
            "popularity@10": self.popularity10,
        }


#: (user id, items to leave out, how many) -> item ids, best first.
RecommendFunction = Callable[[str, frozenset[str], int], Sequence[str]]


def evaluate(
    recommend: RecommendFunction, split: TemporalSplit, percentiles: Mapping[str, float]
) -> Metrics:
    """Score a recommender on every test user of the split (HR and NDCG at 10, recall at
    20, catalogue coverage and popularity at 10). Items the user bought in training are
    removed from its answers here too, so no model gains from ignoring the rule."""
    users = sorted(split.targets)
    lists: list[list[str]] = []
    hits = gains = found = 0.0
    for user in users:
        bought = split.bought[user]
        ranked = [item for item in recommend(user, bought, 20) if item not in bought][:20]
        relevant = split.targets[user]
        hits += hit_rate(ranked, relevant, 10)
        gains += ndcg(ranked, relevant, 10)
        found += recall(ranked, relevant, 20)
        lists.append(ranked)
    count = max(len(users), 1)
    return Metrics(
        hr10=hits / count,
        ndcg10=gains / count,
        recall20=found / count,
        coverage10=coverage(lists, len(split.catalogue), 10),
        popularity10=mean_percentile(lists, percentiles, 10),
        users=len(users),
    )
