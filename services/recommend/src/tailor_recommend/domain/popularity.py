"""Popular and trending items, globally or per group (a segment id, a context key such as
``country:FR``, a category such as ``category:Home/Candles``).

Weights are kept in time buckets (an hour by default), so any window from one bucket to
the retention can be asked for: *popular* sums a window, *trending* compares a recent
window with the longer baseline before it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: The group every interaction is also counted in.
GLOBAL = ""


@dataclass(frozen=True, slots=True)
class Popular:
    item_id: str
    score: float  # popular: summed weight in the window; trending: smoothed lift (1 = flat)
    recent: float  # summed weight in the (recent) window


class PopularityModel:
    """Bucketed weights per group; ``add`` is O(groups), a read O(buckets x items in them)."""

    def __init__(
        self, *, bucket: timedelta = timedelta(hours=1), retention: timedelta = timedelta(days=400)
    ) -> None:
        if bucket <= timedelta(0) or retention < bucket:
            raise ValueError("bucket must be positive and retention at least one bucket")
        self.bucket = bucket
        self.retention = retention
        # group -> bucket number -> item -> weight
        self._counts: dict[str, dict[int, dict[str, float]]] = {}
        # Window sums by (group, first bucket, last bucket); any write clears it, so it only
        # pays between writes (a batch evaluation, bursts of reads).
        self._sums: dict[tuple[str, int, int], dict[str, float]] = {}

    def _bucket_of(self, at: datetime) -> int:
        return math.floor((at - datetime(1970, 1, 1, tzinfo=UTC)) / self.bucket)

    def add(self, item_id: str, weight: float, at: datetime, groups: Iterable[str] = ()) -> None:
        """Count ``weight`` for the item at ``at``, globally and in each of ``groups``."""
        number = self._bucket_of(at)
        self._sums.clear()
        for group in (GLOBAL, *groups):
            bucket = self._counts.setdefault(group, {}).setdefault(number, {})
            bucket[item_id] = bucket.get(item_id, 0.0) + weight

    def expire(self, now: datetime) -> None:
        """Forget buckets older than the retention."""
        oldest = self._bucket_of(now - self.retention)
        self._sums.clear()
        for group, buckets in list(self._counts.items()):
            for number in [n for n in buckets if n < oldest]:
                del buckets[number]
            if not buckets:
                del self._counts[group]

    def groups(self) -> set[str]:
        return set(self._counts)

    def has_group(self, group: str) -> bool:
        return group in self._counts

    def _sum(self, group: str, start: datetime, end: datetime) -> dict[str, float]:
        """Weights per item over the buckets that overlap [start, end): the bucket holding
        ``end`` counts, or nothing of the last hour would be popular until the hour is over."""
        first = self._bucket_of(start)
        last = self._bucket_of(end - timedelta(microseconds=1)) + 1
        cached = self._sums.get((group, first, last))
        if cached is not None:
            return cached
        totals: dict[str, float] = {}
        buckets = self._counts.get(group, {})
        numbers = (
            range(first, last)
            if last - first <= len(buckets)
            else sorted(n for n in buckets if first <= n < last)
        )
        for number in numbers:
            for item, weight in buckets.get(number, {}).items():
                totals[item] = totals.get(item, 0.0) + weight
        self._sums[(group, first, last)] = totals
        return totals

    def popular(
        self,
        k: int,
        now: datetime,
        window: timedelta = timedelta(days=7),
        *,
        group: str = GLOBAL,
        exclude: Collection[str] = (),
    ) -> list[Popular]:
        """The ``k`` items with the most weight in ``[now - window, now)``, best first."""
        totals = self._sum(group, now - window, now)
        found = [
            Popular(item, weight, weight)
            for item, weight in totals.items()
            if weight > 0.0 and item not in exclude
        ]
        found.sort(key=lambda p: (-p.score, p.item_id))
        return found[:k]

    def trending(
        self,
        k: int,
        now: datetime,
        window: timedelta = timedelta(days=1),
        *,
        baseline: timedelta = timedelta(days=28),
        smoothing: float = 5.0,
        group: str = GLOBAL,
        exclude: Collection[str] = (),
    ) -> list[Popular]:
        """Items whose recent weight most exceeds what their baseline predicts.

        score = (recent + s) / (expected + s), where ``expected`` is the weight of the
        ``baseline`` before the window scaled to the window's length and ``s`` the
        smoothing pseudo-weight: without it one sale of a never-sold item would be an
        infinite lift. Only items with recent weight and a score above 1 trend.
        """
        start = now - window
        recent = self._sum(group, start, now)
        before = self._sum(group, start - baseline, start)
        ratio = window / baseline
        found = []
        for item, weight in recent.items():
            if weight <= 0.0 or item in exclude:
                continue
            expected = max(before.get(item, 0.0), 0.0) * ratio
            score = (weight + smoothing) / (expected + smoothing)
            if score > 1.0:
                found.append(Popular(item, score, weight))
        found.sort(key=lambda p: (-p.score, -p.recent, p.item_id))
        return found[:k]


def segment_group(segment_id: str) -> str:
    return f"segment:{segment_id}"


def category_group(category: str) -> str:
    return f"category:{category}"


def context_groups(
    *, country: str = "", device_type: str = "", local_hour: int | None = None
) -> list[str]:
    """Group keys an interaction in this context is counted in, most specific first."""
    groups = []
    if country:
        groups.append(f"country:{country}")
    if device_type:
        groups.append(f"device:{device_type}")
    if local_hour is not None:
        groups.append(f"daypart:{daypart(local_hour)}")
    return groups


def daypart(hour: int) -> str:
    """Coarse time of day: counting per hour would split the data 24 ways."""
    if 6 <= hour < 12:
        return "morning"
    if 12 <= hour < 18:
        return "afternoon"
    if 18 <= hour < 23:
        return "evening"
    return "night"
