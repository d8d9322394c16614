"""Item-to-item co-occurrence, updated one interaction at a time.

The score of items i and j is the cosine of their columns in the weighted user x item
matrix: ``C[i][j] / sqrt(N[i] * N[j])`` with ``C[i][j] = sum_u w[u][i] * w[u][j]`` and
``N[i] = sum_u w[u][i] ** 2``. Why cosine and not a Jaccard-like ratio: it takes weights as
they are (a purchase is worth five views), it divides out popularity (a best-seller is not
similar to everything), and it is bilinear, so one event changes ``C`` and ``N`` by exact
amounts (``delta * w[u][j]``) — an incremental model equals a batch build. Jaccard on
weights needs ``min``/``max`` of whole histories, which a stream cannot update exactly.

Time decay is exact as well: instead of shrinking every stored weight as time passes, a new
event is *grown* by ``2 ** ((at - epoch) / half_life)``. All weights then carry the same
hidden factor, which cosine cancels; the epoch moves forward now and then so floats stay
in range.

Memory is bounded two ways, and only there does the model depart from a batch build: each
item keeps its ``max_neighbours`` best neighbours (trimmed by score once it holds twice
that), and each user's ``max_history`` most recent items (older ones stop pairing with new
events, but what they already added stays).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

from tailor_recommend.domain.interactions import IdIndex

#: Move the epoch once new events are grown by more than 2**REBASE_HALF_LIVES; squares of
#: weights then stay far below float64's 2**1024.
REBASE_HALF_LIVES = 128.0


@dataclass(frozen=True, slots=True)
class Neighbour:
    item_id: str
    score: float  # cosine, 0..1


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An item for a user, and the history item that contributed most to its score."""

    item_id: str
    score: float
    because: str


class CooccurrenceModel:
    """Weighted item-item cosine, updated per interaction (see the module docstring)."""

    def __init__(
        self,
        *,
        half_life: timedelta | None = None,
        max_neighbours: int = 200,
        max_history: int = 500,
    ) -> None:
        if max_neighbours < 1 or max_history < 1:
            raise ValueError("max_neighbours and max_history must be at least 1")
        self.half_life = half_life
        self.max_neighbours = max_neighbours
        self.max_history = max_history
        self._co: dict[str, dict[str, float]] = {}
        self._norm: dict[str, float] = {}
        # user -> item -> grown weight, oldest first (dicts keep insertion order)
        self._history: dict[str, dict[str, float]] = {}
        self._epoch: datetime | None = None
        self.updated_at: datetime | None = None
        self.events = 0

    # --- updates -------------------------------------------------------------------------

    def add(self, user_id: str, item_id: str, weight: float, at: datetime) -> None:
        """Apply one interaction of ``weight`` (negative for a refund) at ``at``.

        A user's weight for an item never goes below zero: a refund takes back at most what
        was bought.
        """
        grown = weight * self._growth(at)
        history = self._history.setdefault(user_id, {})
        old = history.pop(item_id, 0.0)
        new = max(old + grown, 0.0)
        delta = new - old
        self.events += 1
        self.updated_at = at if self.updated_at is None else max(self.updated_at, at)
        if delta != 0.0:
            self._pair(item_id, delta, history)
            self._norm[item_id] = max(self._norm.get(item_id, 0.0) + new * new - old * old, 0.0)
        if new > 0.0:
            history[item_id] = new  # re-inserted: now the most recent
            if len(history) > self.max_history:
                del history[next(iter(history))]
        elif not history:
            del self._history[user_id]

    def _pair(self, item_id: str, delta: float, history: Mapping[str, float]) -> None:
        co = self._co
        own = co.setdefault(item_id, {})
        limit = 2 * self.max_neighbours
        for other, other_weight in history.items():
            change = delta * other_weight
            value = own.get(other, 0.0) + change
            if value > 0.0:
                own[other] = value
            else:
                own.pop(other, None)
            theirs = co.setdefault(other, {})
            value = theirs.get(item_id, 0.0) + change
            if value > 0.0:
                theirs[item_id] = value
                if len(theirs) > limit:
                    self._trim(other)
            else:
                theirs.pop(item_id, None)
        if len(own) > limit:
            self._trim(item_id)

    def _trim(self, item_id: str) -> None:
        # Ranking by C/sqrt(N[j]) is ranking by cosine: N[item] is common to the row.
        norm = self._norm
        row = self._co[item_id]
        kept = sorted(
            row.items(), key=lambda pair: pair[1] / math.sqrt(max(norm.get(pair[0], 0.0), 1e-300))
        )[-self.max_neighbours :]
        self._co[item_id] = dict(kept)

    def _growth(self, at: datetime) -> float:
        if self.half_life is None:
            return 1.0
        if self._epoch is None:
            self._epoch = at
        exponent = (at - self._epoch) / self.half_life
        if exponent > REBASE_HALF_LIVES:
            self._rebase(exponent)
            exponent = (at - self._epoch) / self.half_life
        return math.pow(2.0, exponent)

    def _rebase(self, exponent: float) -> None:
        assert self._epoch is not None
        assert self.half_life is not None
        shift = math.floor(exponent)
        weight_scale, square_scale = math.pow(2.0, -shift), math.pow(2.0, -2 * shift)
        for history in self._history.values():
            for item in history:
                history[item] *= weight_scale
        for row in self._co.values():
            for item in row:
                row[item] *= square_scale
        for item in self._norm:
            self._norm[item] *= square_scale
        self._epoch += self.half_life * shift

    # --- reads ---------------------------------------------------------------------------

    def __contains__(self, item_id: object) -> bool:
        return bool(self._co.get(item_id))  # type: ignore[call-overload]

    @property
    def items(self) -> int:
        """Items with at least one neighbour."""
        return sum(1 for row in self._co.values() if row)

    @property
    def users(self) -> int:
        return len(self._history)

    def neighbour_count(self, item_id: str) -> int:
        """Neighbours held for the item (at most twice ``max_neighbours``)."""
        return len(self._co.get(item_id, {}))

    def history(self, user_id: str) -> dict[str, float]:
        """The user's recent items and their weights (relative: comparable within a user)."""
        return dict(self._history.get(user_id, {}))

    def similarity(self, item_a: str, item_b: str) -> float:
        value = self._co.get(item_a, {}).get(item_b, 0.0)
        product = self._norm.get(item_a, 0.0) * self._norm.get(item_b, 0.0)
        # A norm refunded to zero can leave float dust in a co-count: no similarity then.
        if value <= 0.0 or product <= 0.0:
            return 0.0
        return min(value / math.sqrt(product), 1.0)

    def similar(self, item_id: str, k: int, exclude: Collection[str] = ()) -> list[Neighbour]:
        """The ``k`` items most similar to ``item_id``, best first (empty when cold)."""
        row = self._co.get(item_id)
        if not row:
            return []
        scored = [
            Neighbour(other, score)
            for other in row
            if other not in exclude and (score := self.similarity(item_id, other)) > 0.0
        ]
        scored.sort(key=lambda n: (-n.score, n.item_id))
        return scored[:k]

    def recommend(
        self, history: Mapping[str, float], k: int, exclude: Collection[str] = ()
    ) -> list[Suggestion]:
        """Items scored ``sum_h w[h] * cos(h, item)`` over the history, best first.

        ``history`` maps item ids to the user's weights (any positive scale); its own items
        are never suggested. Each suggestion names the history item whose term was largest.
        """
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        norm = self._norm
        for seen, seen_weight in history.items():
            row = self._co.get(seen)
            own = norm.get(seen, 0.0)
            if not row or seen_weight <= 0.0 or own <= 0.0:
                continue
            scale = seen_weight / math.sqrt(own)
            for other, value in row.items():
                theirs = norm.get(other, 0.0)
                if theirs <= 0.0:
                    continue
                term = scale * value / math.sqrt(theirs)
                scores[other] = scores.get(other, 0.0) + term
                top = best.get(other)
                if top is None or term > top[0] or (term == top[0] and seen < top[1]):
                    best[other] = (term, seen)
        found = [
            Suggestion(item, score, best[item][1])
            for item, score in scores.items()
            if item not in history and item not in exclude
        ]
        found.sort(key=lambda s: (-s.score, s.item_id))
        return found[:k]

    def similarity_matrix(self, items: IdIndex) -> sp.csr_matrix:
        """The cosine scores as a sparse items x items matrix over ``items`` (others are
        left out), for scoring many users at once: ``user_rows @ matrix``."""
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for item, row in self._co.items():
            i = items.index(item)
            if i is None:
                continue
            for other in row:
                j = items.index(other)
                score = self.similarity(item, other)
                if j is not None and score > 0.0:
                    rows.append(i)
                    cols.append(j)
                    values.append(score)
        size = len(items)
        return sp.csr_matrix(
            (np.asarray(values, dtype=np.float32), (rows, cols)), shape=(size, size)
        )
