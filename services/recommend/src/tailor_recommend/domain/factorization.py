"""Matrix factorization for implicit feedback (ALS, Hu, Koren & Volinsky 2008) via
``implicit``, with the trained factors as a versioned artifact that serialises to bytes.

Training uses ``implicit``; serving needs only the factors (numpy dot products), so a
loaded artifact does not depend on the library's own model object or its pickles.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from tailor_recommend.domain.interactions import IdIndex, InteractionMatrix

FloatMatrix = npt.NDArray[np.float32]
ARTIFACT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class AlsParams:
    """Hyper-parameters; ``alpha`` scales matrix weights into confidences."""

    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 1.0
    random_state: int = 42
    num_threads: int = 1  # the service shares its cores; 0 = all of them


@dataclass(frozen=True, eq=False)
class AlsModel:
    """Trained factors, their id maps and what produced them."""

    user_factors: FloatMatrix  # users x factors
    item_factors: FloatMatrix  # items x factors
    users: IdIndex
    items: IdIndex
    params: AlsParams
    version: str
    trained_at: datetime
    interactions: int = 0
    training_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    _item_norms: FloatMatrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        norms = np.linalg.norm(self.item_factors, axis=1)
        object.__setattr__(self, "_item_norms", np.where(norms > 0, norms, 1.0))

    # --- scoring -------------------------------------------------------------------------

    def scores(self, user_index: int) -> FloatMatrix:
        """Preference of one user for every item (dot products), by item index."""
        return np.asarray(self.item_factors @ self.user_factors[user_index], dtype=np.float32)

    def recommend(
        self, user_index: int, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """The ``k`` best (item index, score) for a trained user, leaving out ``exclude``."""
        return _top(self.scores(user_index), k, exclude)

    def fold_in(self, item_weights: dict[int, float]) -> FloatMatrix:
        """A user vector for a history the model was not trained on (a new user, or one
        with events since), by the same least-squares step ALS takes for a user."""
        y = self.item_factors.astype(np.float64)
        a = y.T @ y + self.params.regularization * np.eye(y.shape[1])
        b = np.zeros(y.shape[1])
        for item, weight in item_weights.items():
            confidence = self.params.alpha * weight
            if confidence <= 0:
                continue
            a += (confidence - 1.0) * np.outer(y[item], y[item])
            b += confidence * y[item]
        return np.linalg.solve(a, b).astype(np.float32)

    def recommend_for_history(
        self, item_weights: dict[int, float], k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        vector = self.fold_in(item_weights)
        return _top(self.item_factors @ vector, k, {*exclude, *item_weights})

    def similar_items(
        self, item_index: int, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """The ``k`` items whose factors have the highest cosine with this one's."""
        own = self.item_factors[item_index] / self._item_norms[item_index]
        cosines = (self.item_factors @ own) / self._item_norms
        return _top(cosines, k, {*exclude, item_index})

    # --- artifact ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """An ``.npz`` of the factors, the id maps and the metadata as JSON; no pickles."""
        metadata = {
            "format": ARTIFACT_FORMAT,
            "version": self.version,
            "trained_at": self.trained_at.isoformat(),
            "interactions": self.interactions,
            "training_seconds": self.training_seconds,
            "params": asdict(self.params),
            "metrics": self.metrics,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_ids=np.array(list(self.users.ids), dtype=np.str_),
            item_ids=np.array(list(self.items.ids), dtype=np.str_),
            metadata=np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AlsModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            metadata: dict[str, Any] = json.loads(arrays["metadata"].tobytes())
            if metadata.get("format") != ARTIFACT_FORMAT:
                raise ValueError(f"unknown ALS artifact format {metadata.get('format')!r}")
            return cls(
                user_factors=arrays["user_factors"],
                item_factors=arrays["item_factors"],
                users=IdIndex(str(id_) for id_ in arrays["user_ids"]),
                items=IdIndex(str(id_) for id_ in arrays["item_ids"]),
                params=AlsParams(**metadata["params"]),
                version=metadata["version"],
                trained_at=datetime.fromisoformat(metadata["trained_at"]),
                interactions=int(metadata["interactions"]),
                training_seconds=float(metadata["training_seconds"]),
                metrics={str(k): float(v) for k, v in metadata["metrics"].items()},
            )


def _top(scores: FloatMatrix, k: int, exclude: Collection[int]) -> list[tuple[int, float]]:
    scores = scores.astype(np.float64, copy=True)
    if exclude:
        scores[np.fromiter(exclude, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    # Ties broken by index, so a ranking is reproducible.
    ordered = best[np.lexsort((best, -scores[best]))]
    return [(int(i), float(scores[i])) for i in ordered]


def train_als(
    data: InteractionMatrix, params: AlsParams, *, version: str, trained_at: datetime
) -> AlsModel:
    """Fit ALS on the matrix (users x items weights); deterministic for a given
    ``random_state`` and thread count."""
    if data.matrix.nnz == 0:
        raise ValueError("cannot train ALS on an empty matrix")
    started = time.perf_counter()
    # implicit runs its own threads; BLAS threads on top of them oversubscribe the cores
    # (and implicit warns about it when the model is made, hence both inside).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.random_state,
            num_threads=params.num_threads,
        )
        model.fit(data.matrix, show_progress=False)
    return AlsModel(
        user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
        item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
        users=data.users,
        items=data.items,
        params=params,
        version=version,
        trained_at=trained_at,
        interactions=data.interactions,
        training_seconds=time.perf_counter() - started,
    )


def top_items(model: AlsModel, user_id: str, k: int, exclude: Sequence[str] = ()) -> list[str]:
    """Item ids for a trained user by id (empty for a user the model does not know)."""
    row = model.users.index(user_id)
    if row is None:
        return []
    skip = {i for i in (model.items.index(item) for item in exclude) if i is not None}
    return [model.items.id(i) for i, _ in model.recommend(row, k, skip)]
