"""An interaction log as a weighted user x item matrix.

Every event kind has a weight (a purchase says more than a view), older events count less
(exponential decay with a half-life), and a refund subtracts what its purchase added. The
matrix is what the batch models train on; :class:`IdIndex` keeps user and item ids stable
as integer rows and columns, both ways.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]


class EventKind(StrEnum):
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Interaction:
    """One subject touching one item at one moment (``at`` must be timezone-aware)."""

    user_id: str
    item_id: str
    kind: EventKind
    at: datetime


@dataclass(frozen=True, slots=True)
class InteractionWeights:
    """How much each event kind counts, and how fast it fades.

    A refund's weight is negative: it takes back a purchase. ``half_life`` None means no
    decay. One event counts once whatever its quantity, so a wholesaler's order of 1,000
    units does not outweigh a hundred customers who bought one each.
    """

    view: float = 1.0
    add_to_cart: float = 3.0
    purchase: float = 5.0
    refund: float = -5.0
    half_life: timedelta | None = None

    def base(self, kind: EventKind) -> float:
        """The weight of one event of this kind before decay."""
        match kind:
            case EventKind.VIEW:
                return self.view
            case EventKind.ADD_TO_CART:
                return self.add_to_cart
            case EventKind.PURCHASE:
                return self.purchase
            case EventKind.REFUND:
                return self.refund

    def decay(self, at: datetime, now: datetime) -> float:
        """Factor in (0, 1] for an event at ``at`` seen from ``now``; future events count 1."""
        if self.half_life is None:
            return 1.0
        age = max((now - at).total_seconds(), 0.0)
        return math.pow(0.5, age / self.half_life.total_seconds())

    def weight(self, interaction: Interaction, now: datetime) -> float:
        return self.base(interaction.kind) * self.decay(interaction.at, now)


class IdIndex:
    """Stable integer indexes for string ids: the first id added is 0, the next 1, and so on.

    Indexes never change once given, so a matrix built later with the same index keeps its
    rows and columns where they were.
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for id_ in ids:
            self.add(id_)

    def add(self, id_: str) -> int:
        """The index of ``id_``, giving it the next one when it is new."""
        found = self._index.get(id_)
        if found is None:
            found = len(self._ids)
            self._index[id_] = found
            self._ids.append(id_)
        return found

    def index(self, id_: str) -> int | None:
        return self._index.get(id_)

    def id(self, index: int) -> str:
        return self._ids[index]

    @property
    def ids(self) -> Sequence[str]:
        return tuple(self._ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdIndex) and self._ids == other._ids

    def __hash__(self) -> int:  # mutable: identity hash like a list would refuse
        return id(self)


@dataclass(frozen=True)
class InteractionMatrix:
    """Users x items, float32 CSR; entry = decayed net weight (>= 0 unless kept negative)."""

    matrix: sp.csr_matrix
    users: IdIndex
    items: IdIndex
    interactions: int  # events folded in, refunds included

    def user_row(self, user_id: str) -> dict[str, float]:
        """The non-zero weights of one user, by item id (empty for an unknown user)."""
        row = self.users.index(user_id)
        if row is None or row >= self.matrix.shape[0]:
            return {}
        start, end = self.matrix.indptr[row], self.matrix.indptr[row + 1]
        return {
            self.items.id(int(col)): float(value)
            for col, value in zip(
                self.matrix.indices[start:end], self.matrix.data[start:end], strict=True
            )
        }


def build_matrix(
    interactions: Iterable[Interaction],
    weights: InteractionWeights,
    now: datetime,
    *,
    users: IdIndex | None = None,
    items: IdIndex | None = None,
    keep_negative: bool = False,
) -> InteractionMatrix:
    """Fold the log into a matrix, decayed as seen from ``now``.

    Weights of one (user, item) add up; a net negative (refunded more than bought in the
    log, e.g. the purchase predates it) is dropped unless ``keep_negative``, since the
    factorization reads entries as confidence, which cannot be below zero. Given indexes
    are extended, never reordered.
    """
    users = users if users is not None else IdIndex()
    items = items if items is not None else IdIndex()
    totals: dict[tuple[int, int], float] = {}
    count = 0
    for interaction in interactions:
        key = (users.add(interaction.user_id), items.add(interaction.item_id))
        totals[key] = totals.get(key, 0.0) + weights.weight(interaction, now)
        count += 1
    kept = [(key, value) for key, value in totals.items() if keep_negative or value > 0]
    rows = np.fromiter((key[0] for key, _ in kept), dtype=np.int32, count=len(kept))
    cols = np.fromiter((key[1] for key, _ in kept), dtype=np.int32, count=len(kept))
    data = np.fromiter((value for _, value in kept), dtype=np.float32, count=len(kept))
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(users), len(items)), dtype=np.float32)
    matrix.sort_indices()
    return InteractionMatrix(matrix=matrix, users=users, items=items, interactions=count)
