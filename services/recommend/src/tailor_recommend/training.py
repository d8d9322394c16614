"""Batch training of the ALS model, on demand and on a schedule. A version is a row in
``models``: TRAINING while it fits (one at a time across replicas, by a unique index), then
SERVING in the same transaction that retires the previous one, so every replica swaps to it
on its next refresh and no request ever sees a half-written model.

Before the serving fit, the same parameters are fitted once on all but the latest tenth of
the time span and scored on the purchases in it (HR@10, NDCG@10, recall@20, coverage): the
version's offline metrics. The stored artifact keeps item factors only (see live.py)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import structlog

from tailor_core.errors import FailedPrecondition
from tailor_recommend.adapters import store
from tailor_recommend.domain import evaluation
from tailor_recommend.domain.factorization import AlsModel, AlsParams, train_als
from tailor_recommend.domain.interactions import (
    EventKind,
    IdIndex,
    Interaction,
    InteractionWeights,
    build_matrix,
)

log = structlog.get_logger(__name__)

MIN_INTERACTIONS = 20
MIN_USERS = 2
MIN_ITEMS = 2


def _fit(
    interactions: list[Interaction], params: AlsParams, weights: InteractionWeights, version: str
) -> tuple[AlsModel, dict[str, float], int]:
    """Holdout metrics, then the serving model on everything; returns the peak RSS too."""
    now = max(i.at for i in interactions)
    first = min(i.at for i in interactions)
    cutoff = first + (now - first) * 0.9
    metrics: dict[str, float] = {}
    split = evaluation.temporal_split(interactions, cutoff)
    if split.targets:
        held = train_als(
            build_matrix(split.train, weights, cutoff), params, version=version, trained_at=now
        )
        counts: dict[str, float] = {}
        for interaction in split.train:
            counts[interaction.item_id] = counts.get(interaction.item_id, 0.0) + 1

        def recommend(user: str, bought: frozenset[str], k: int) -> list[str]:
            row = held.users.index(user)
            if row is None:
                return []
            exclude = {i for i in (held.items.index(b) for b in bought) if i is not None}
            return [held.items.id(i) for i, _ in held.recommend(row, k, exclude)]

        found = evaluation.evaluate(
            recommend, split, evaluation.popularity_percentiles(counts)
        ).as_dict()
        metrics = {key: float(value) for key, value in found.items()}
    model = train_als(
        build_matrix(interactions, weights, now), params, version=version, trained_at=now
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return replace(model, metrics=metrics), metrics, peak


def without_users(model: AlsModel) -> AlsModel:
    """The model with its user factors dropped: subjects are folded in at request time."""
    return replace(
        model,
        user_factors=np.zeros((0, model.item_factors.shape[1]), dtype=np.float32),
        users=IdIndex(),
    )


class Trainer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        params: AlsParams,
        weights: InteractionWeights,
        interval_seconds: float,
    ) -> None:
        self._pool = pool
        self._params = params
        self._weights = weights
        self._interval = interval_seconds
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.next_training_at: datetime | None = None

    async def start(self) -> str:
        """Record a TRAINING version and fit it in the background; returns its version."""
        async with self._pool.acquire() as conn:
            counts = await conn.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT subject_id) AS users, "
                "count(DISTINCT item_id) AS items FROM interactions"
            )
            assert counts is not None
            await conn.execute(
                "UPDATE models SET state = 'FAILED', error = 'interrupted: its process stopped' "
                "WHERE state = 'TRAINING' AND started_at < now() - interval '1 hour'"
            )
            if (
                counts["n"] < MIN_INTERACTIONS
                or counts["users"] < MIN_USERS
                or counts["items"] < MIN_ITEMS
            ):
                raise FailedPrecondition(
                    f"too little data to train ALS: {counts['n']} interactions, "
                    f"{counts['users']} subjects, {counts['items']} items (the minimum is "
                    f"{MIN_INTERACTIONS} interactions, {MIN_USERS} subjects, {MIN_ITEMS} items)"
                )
            now = datetime.now(UTC)
            version = f"als-{now:%Y-%m-%dT%H:%M:%SZ}-{uuid.uuid4().hex[:6]}"
            try:
                await conn.execute(
                    "INSERT INTO models (version, model, state, started_at) "
                    "VALUES ($1, 'als', 'TRAINING', $2)",
                    version,
                    now,
                )
            except asyncpg.UniqueViolationError:
                raise FailedPrecondition("ALS is already training") from None
        task = asyncio.create_task(self._train(version), name=f"train-{version}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return version

    async def _train(self, version: str) -> None:
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT subject_id, item_id, kind, at FROM interactions ORDER BY position"
                )
            interactions = [
                Interaction(r["subject_id"], r["item_id"], EventKind(r["kind"]), r["at"])
                for r in rows
            ]
            model, metrics, peak = await asyncio.to_thread(
                _fit, interactions, self._params, self._weights, version
            )
        except Exception as error:  # a version must end in a state, whatever went wrong
            log.exception("ALS training failed", version=version)
            await self._failed(version, f"{type(error).__name__}: {error}"[:500])
            return
        stored = without_users(model)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE models SET state = 'RETIRED' WHERE model = 'als' AND state = 'SERVING'"
            )
            await conn.execute(
                "UPDATE models SET state = 'SERVING', trained_at = $2, artifact = $3, "
                "users = $4, items = $5, interactions = $6, training_seconds = $7, "
                "peak_bytes = $8, metrics = $9 WHERE version = $1",
                version,
                datetime.now(UTC),
                stored.to_bytes(),
                len(model.users),
                len(model.items),
                model.interactions,
                time.perf_counter() - started,
                peak,
                store.metrics_json(metrics),
            )
        log.info("ALS version serving", version=version, items=len(model.items), **metrics)

    async def _failed(self, version: str, error: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE models SET state = 'FAILED', error = $2 WHERE version = $1",
                version,
                error,
            )

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> None:
        """The schedule: a version every ``interval`` seconds (0: none)."""
        while not self._stopping.is_set():
            wait = self._interval or 3600.0
            self.next_training_at = (
                datetime.fromtimestamp(time.time() + wait, UTC) if self._interval else None
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            if self._stopping.is_set() or not self._interval:
                continue
            with contextlib.suppress(FailedPrecondition):
                await self.start()

    async def stop(self) -> None:
        self._stopping.set()
        names = [t.get_name().removeprefix("train-") for t in self._tasks]
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if names:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    "UPDATE models SET state = 'FAILED', error = 'interrupted: shut down' "
                    "WHERE version = ANY($1::text[]) AND state = 'TRAINING'",
                    names,
                )

    @staticmethod
    def info(row: Any) -> dict[str, Any]:
        return dict(row)
