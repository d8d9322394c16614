"""Discovered segments: K-Means runs over the behavioural vectors of profiles with consent
for a purpose, on a schedule and on demand. A run is a row in ``cluster_runs``; at most one
runs at a time across replicas (a unique index), and the fitting itself runs in a worker
thread so the service keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from tailor_core.consent_client import ConsentClient
from tailor_core.db import Connection
from tailor_core.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument
from tailor_segment.adapters import facts
from tailor_segment.domain import clustering

log = structlog.get_logger(__name__)

DEFAULT_K = (2, 10)
#: A run still RUNNING this long after it started was cut short (its process died).
ABANDONED_AFTER = timedelta(minutes=30)
PAGE = 2000


@dataclass(frozen=True)
class ClusterRun:
    run_id: str
    state: str
    seed: int
    k_min: int
    k_max: int
    features: tuple[str, ...]
    purpose: str
    on_demand: bool
    started_at: datetime
    finished_at: datetime | None
    k: int | None
    silhouette: float | None
    scores: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    profiles: int
    error: str


def _run(row: Any) -> ClusterRun:
    return ClusterRun(
        run_id=row["run_id"],
        state=row["state"],
        seed=row["seed"],
        k_min=row["k_min"],
        k_max=row["k_max"],
        features=tuple(row["features"]),
        purpose=row["purpose"],
        on_demand=row["on_demand"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        k=row["k"],
        silhouette=row["silhouette"],
        scores=json.loads(row["scores"]) if row["scores"] else [],
        clusters=json.loads(row["clusters"]) if row["clusters"] else [],
        profiles=row["profiles"],
        error=row["error"],
    )


_COLUMNS = (
    "run_id, state, seed, k_min, k_max, features, purpose, on_demand, started_at, "
    "finished_at, k, silhouette, scores, clusters, profiles, error"
)


async def get_run(conn: Connection, run_id: str) -> ClusterRun | None:
    if run_id:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM cluster_runs WHERE run_id = $1", run_id)
    else:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM cluster_runs WHERE state = 'COMPLETED' "
            "ORDER BY started_at DESC LIMIT 1"
        )
    return _run(row) if row else None


async def list_runs(
    conn: Connection, before: tuple[datetime, str] | None, limit: int
) -> list[ClusterRun]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM cluster_runs WHERE "
        "($1::timestamptz IS NULL OR (started_at, run_id) < ($1, $2)) "
        "ORDER BY started_at DESC, run_id DESC LIMIT $3",
        before[0] if before else None,
        before[1] if before else "",
        limit,
    )
    return [_run(row) for row in rows]


async def set_promoted(conn: Connection, run_id: str, cluster_id: int, segment_id: str) -> None:
    """Record on the run's cluster which segment it became."""
    run = await get_run(conn, run_id)
    assert run is not None
    clusters = [
        {**c, "promoted_segment_id": segment_id} if c["cluster_id"] == cluster_id else c
        for c in run.clusters
    ]
    await conn.execute(
        "UPDATE cluster_runs SET clusters = $2 WHERE run_id = $1", run_id, json.dumps(clusters)
    )


def _cluster_json(cluster: clustering.Cluster) -> dict[str, Any]:
    return {
        "cluster_id": cluster.cluster_id,
        "size": cluster.size,
        "share": cluster.share,
        "label": cluster.label,
        "features": [asdict(f) for f in cluster.features],
        "centroid": dict(cluster.centroid),
        "promoted_segment_id": "",
    }


class Discovery:
    """Starts runs and carries them out; also the scheduled runs' loop."""

    def __init__(
        self, pool: asyncpg.Pool, consent: ConsentClient, *, interval_seconds: float
    ) -> None:
        self._pool = pool
        self._consent = consent
        self._interval = interval_seconds
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        *,
        k_min: int,
        k_max: int,
        seed: int,
        features: Sequence[str],
        purpose: str,
        on_demand: bool,
    ) -> ClusterRun:
        """Record a RUNNING run and carry it out in the background."""
        k_min, k_max = k_min or DEFAULT_K[0], k_max or DEFAULT_K[1]
        try:
            clustering.validate_k_range((k_min, k_max))
        except InvalidArgument as error:
            # The domain names the range; the request names its two fields.
            raise InvalidArgument(
                error.message,
                [
                    FieldViolation(
                        "k_min" if "k_min" in v.field else "k_max", v.description, v.reason
                    )
                    for v in error.field_violations
                ],
            ) from None
        chosen = clustering.select_features(features)
        now = datetime.now(UTC)
        run_id = f"run-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE cluster_runs SET state = 'FAILED', finished_at = $1, "
                "error = 'interrupted: the process running it stopped' "
                "WHERE state = 'RUNNING' AND started_at < $2",
                now,
                now - ABANDONED_AFTER,
            )
            try:
                await conn.execute(
                    "INSERT INTO cluster_runs (run_id, state, seed, k_min, k_max, features, "
                    "purpose, on_demand, started_at) VALUES ($1, 'RUNNING', $2, $3, $4, $5, $6, "
                    "$7, $8)",
                    run_id,
                    seed,
                    k_min,
                    k_max,
                    list(chosen),
                    purpose,
                    on_demand,
                    now,
                )
            except asyncpg.UniqueViolationError:
                raise FailedPrecondition("a discovery run is already in progress") from None
            run = await get_run(conn, run_id)
        assert run is not None
        task = asyncio.create_task(self._carry_out(run), name=f"cluster-{run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _carry_out(self, run: ClusterRun) -> None:
        try:
            profiles = await self._profiles(run.purpose)
            found = await asyncio.to_thread(
                _discover, profiles, run.features, (run.k_min, run.k_max), run.seed
            )
        except (DomainError, ValueError) as error:
            await self._finish(run.run_id, error=getattr(error, "message", str(error)))
            return
        except Exception as error:  # a run must end in a state, whatever went wrong
            log.exception("discovery run failed", run=run.run_id)
            await self._finish(run.run_id, error=type(error).__name__)
            return
        await self._finish(run.run_id, found=found)

    async def _profiles(self, purpose: str) -> dict[str, dict[str, Any]]:
        """Trait maps of the subjects with consent for ``purpose``."""
        found: dict[str, dict[str, Any]] = {}
        after: str | None = None
        async with self._pool.acquire() as conn:
            while True:
                page = await facts.traits_page(conn, after, PAGE)
                if not page:
                    return found
                after = page[-1][0]
                answers = await self._consent.check_many((s, purpose) for s, _, _ in page)
                for subject, traits, last_seen in page:
                    if answers[(subject, purpose)].allowed and traits:
                        if last_seen and "last_seen" not in traits:
                            traits["last_seen"] = last_seen.isoformat()
                        found[subject] = traits

    async def _finish(
        self, run_id: str, *, found: clustering.Discovery | None = None, error: str = ""
    ) -> None:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn:
            if found is None:
                await conn.execute(
                    "UPDATE cluster_runs SET state = 'FAILED', finished_at = $2, error = $3 "
                    "WHERE run_id = $1",
                    run_id,
                    now,
                    error[:500],
                )
                log.warning("discovery run failed", run=run_id, error=error[:200])
                return
            await conn.execute(
                "UPDATE cluster_runs SET state = 'COMPLETED', finished_at = $2, k = $3, "
                "silhouette = $4, scores = $5, clusters = $6, model = $7, profiles = $8 "
                "WHERE run_id = $1",
                run_id,
                now,
                found.k,
                found.silhouette,
                json.dumps([asdict(s) for s in found.scores]),
                json.dumps([_cluster_json(c) for c in found.clusters]),
                found.model.to_json(),
                found.profiles,
            )
        log.info("discovery run completed", run=run_id, k=found.k, profiles=found.profiles)

    async def wait_idle(self) -> None:
        """Wait for the runs this process started (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> None:
        """The schedule: a run every ``interval`` seconds (0 = none)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval or 3600)
            if self._stopping.is_set() or not self._interval:
                continue
            try:
                await self.start(
                    k_min=0, k_max=0, seed=0, features=(), purpose="marketing", on_demand=False
                )
            except FailedPrecondition:
                pass  # one is running already
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("scheduled discovery run not started", error=str(exc))

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE cluster_runs SET state = 'FAILED', finished_at = now(), "
                "error = 'interrupted: the service shut down' WHERE state = 'RUNNING' "
                "AND run_id = ANY($1::text[])",
                [t.get_name().removeprefix("cluster-") for t in self._tasks],
            )


def _discover(
    profiles: dict[str, dict[str, Any]],
    features: Sequence[str],
    k_range: tuple[int, int],
    seed: int,
) -> clustering.Discovery:
    now = datetime.now(UTC)
    matrix = clustering.vectorize(profiles, features, now=now)
    return clustering.discover(matrix, k_range, seed=seed)
