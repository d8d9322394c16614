"""Batch jobs over the whole population, on a schedule and on demand, and the window clock.

* RFM scores: quintiles of recency, frequency and monetary value over every buyer.
* Cohort statistics: median age and modal gender and language per country; each profile
  lacking one of them gets the cohort's value as an *imputed* trait (never over a real one).
* Staleness scan: which traits of each profile are older than their threshold.
* The window clock: profiles whose 7 d / 30 d figures change today without a new event get
  their search values rewritten and a ProfileChanged, so segments see members leave.

Each job holds an advisory lock while it runs (one run at a time across replicas) and
records its runs in ``job_runs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import asyncpg
import structlog

from tailor_core.errors import FailedPrecondition
from tailor_core.outbox import enqueue
from tailor_core.streams import Naming
from tailor_profile.adapters import repository as repo
from tailor_profile.domain.catalogue import definition_of
from tailor_profile.domain.population import (
    IMPUTED_CATEGORICAL,
    IMPUTED_NUMERIC,
    Buyer,
    Observation,
    cohort_statistics,
    impute,
    rfm_scores,
)
from tailor_profile.domain.state import iso, parse_iso
from tailor_profile.domain.view import next_window_change
from tailor_profile.projection import changed_message, hash_text, lock_projection, search_values

log = structlog.get_logger(__name__)


class Job(StrEnum):
    RFM_SCORES = "RFM_SCORES"
    COHORT_STATISTICS = "COHORT_STATISTICS"
    STALENESS_SCAN = "STALENESS_SCAN"


@dataclass(frozen=True, slots=True)
class JobRun:
    run_id: str
    job: Job
    state: str
    profiles_updated: int
    started_at: datetime
    finished_at: datetime | None
    on_demand: bool
    error: str


def run_from_row(row: Any) -> JobRun:
    return JobRun(
        row["run_id"],
        Job(row["job"]),
        row["state"],
        row["profiles_updated"],
        row["started_at"],
        row["finished_at"],
        row["on_demand"],
        row["error"],
    )


class BatchJobs:
    def __init__(
        self,
        pool: asyncpg.Pool,
        naming: Naming,
        schema: str,
        currency: str,
        *,
        interval_seconds: float,
        clock_seconds: float,
    ) -> None:
        self._pool = pool
        self._naming = naming
        self._schema = schema
        self._currency = currency
        self._interval = interval_seconds
        self._clock_interval = clock_seconds
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._bodies: dict[Job, Callable[[Any], Awaitable[int]]] = {
            Job.RFM_SCORES: self._rfm,
            Job.COHORT_STATISTICS: self._cohorts,
            Job.STALENESS_SCAN: self._staleness,
        }

    # -- running ---------------------------------------------------------------------------

    async def start(self, job: Job, *, on_demand: bool) -> JobRun:
        """Start ``job`` in the background; FAILED_PRECONDITION when it is already running."""
        conn = await self._pool.acquire()
        try:
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)",
                hash_text(self._schema) + 1,
                list(Job).index(job),
            )
            if not locked:
                raise FailedPrecondition(f"{job.value} is already running")
            row = await conn.fetchrow(
                "INSERT INTO job_runs (run_id, job, state, on_demand) "
                "VALUES ($1, $2, 'RUNNING', $3) RETURNING *",
                f"run-{uuid.uuid4().hex[:16]}",
                job.value,
                on_demand,
            )
        except BaseException:
            await self._pool.release(conn)
            raise
        run = run_from_row(row)
        task = asyncio.create_task(self._execute(conn, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _execute(self, conn: Any, run: JobRun) -> None:
        state, updated, error = "COMPLETED", 0, ""
        try:
            updated = await self._bodies[run.job](conn)
        except Exception as exc:  # recorded on the run; the schedule tries again later
            state, error = "FAILED", f"{type(exc).__name__}: {exc}"[:500]
            log.error("batch job failed", job=run.job.value, error_type=type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await conn.execute(
                    "UPDATE job_runs SET state = $2, profiles_updated = $3, error = $4, "
                    "finished_at = now() WHERE run_id = $1",
                    run.run_id,
                    state,
                    updated,
                    error,
                )
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)",
                    hash_text(self._schema) + 1,
                    list(Job).index(run.job),
                )
            await self._pool.release(conn)
        log.info("batch job finished", job=run.job.value, state=state, profiles_updated=updated)

    async def run(self) -> None:
        """The schedule: every job when its last run is older than the interval, and the
        window clock every ``clock_seconds``."""
        while not self._stopping.is_set():
            try:
                await self._due_jobs()
                await self.advance_windows()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("scheduler round failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._clock_interval)
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    async def stop(self) -> None:
        self._stopping.set()

    async def _due_jobs(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT job, max(started_at) AS last FROM job_runs GROUP BY job"
            )
        last = {row["job"]: row["last"] for row in rows}
        horizon = datetime.now(UTC) - timedelta(seconds=self._interval)
        for job in Job:
            if last.get(job.value) is None or last[job.value] < horizon:
                with contextlib.suppress(FailedPrecondition):
                    await self.start(job, on_demand=False)

    # -- the jobs --------------------------------------------------------------------------

    async def _rfm(self, conn: Any) -> int:
        now = datetime.now(UTC)
        rows = await conn.fetch(
            "SELECT profile_id, state->>'last_order_at' AS last_order, "
            "(state->'life'->>'orders')::bigint AS orders, state->'life'->>'rev' AS revenue, "
            "rfm FROM profiles"
        )
        buyers = [
            Buyer(r["profile_id"], parse_iso(r["last_order"]), r["orders"], Decimal(r["revenue"]))
            for r in rows
            if r["last_order"] and r["orders"] > 0
        ]
        scores = rfm_scores(buyers, now)
        changes = []
        for row in rows:
            new = scores.get(row["profile_id"])
            old = json.loads(row["rfm"]) if row["rfm"] else None
            if new is not None:
                new = {**new, "computed_at": iso(now)}
            if _rfm_part(old) != _rfm_part(new):
                changes.append((row["profile_id"], new))
        await self._write_rfm(conn, changes, now)
        return len(changes)

    async def _write_rfm(
        self,
        conn: Any,
        changes: list[tuple[str, dict[str, Any] | None]],
        now: datetime,
    ) -> None:
        for start in range(0, len(changes), 500):
            chunk = changes[start : start + 500]
            async with conn.transaction():
                await lock_projection(conn, self._schema, exclusive=False)
                stored = await repo.lock_profiles(conn, repo.LIVE, [pid for pid, _ in chunk])
                messages = []
                for pid, rfm in chunk:
                    profile = stored.get(pid)
                    if profile is None:
                        continue
                    await conn.execute(
                        "UPDATE profiles SET rfm = $2 WHERE profile_id = $1",
                        pid,
                        json.dumps(rfm) if rfm else None,
                    )
                    profile.rfm = rfm
                    messages.append(await self._rewrite_search(conn, profile, now, "rfm job"))
                await enqueue(conn, [m for m in messages if m is not None])

    async def _rewrite_search(
        self, conn: Any, profile: repo.StoredProfile, now: datetime, cause: str
    ) -> Any:
        after = search_values(profile, now, self._currency)
        changed = sorted(
            k for k in after.keys() | profile.search.keys() if after.get(k) != profile.search.get(k)
        )
        if not changed:
            return None
        profile.version += 1
        await conn.execute(
            "UPDATE profiles SET search = $2, version = $3, windows_change_at = $4, "
            "updated_at = now() WHERE profile_id = $1",
            profile.profile_id,
            json.dumps(after),
            profile.version,
            next_window_change(profile.state, now),
        )
        return changed_message(
            self._naming, profile, changed, after, cause_event_id="", created=False, now=now
        )

    async def _cohorts(self, conn: Any) -> int:
        now = datetime.now(UTC)
        wanted = (*IMPUTED_NUMERIC, *IMPUTED_CATEGORICAL)
        rows = await conn.fetch("SELECT profile_id, search, imputed FROM profiles")
        observations = []
        cohorts = {}
        for row in rows:
            search = json.loads(row["search"])
            cohort = search.get("demographics.country") or search.get("context.country") or ""
            cohorts[row["profile_id"]] = (cohort, search)
            observed = {t: search[t] for t in wanted if search.get(t) not in (None, "")}
            observations.append(Observation(cohort, observed))
        stats = cohort_statistics(observations)
        async with conn.transaction():
            await conn.execute("DELETE FROM cohort_stats")
            await conn.executemany(
                "INSERT INTO cohort_stats (cohort, stats, computed_at) VALUES ($1, $2, $3)",
                [(c, json.dumps(s), now) for c, s in stats.items()],
            )
        updates = []
        for row in rows:
            cohort, search = cohorts[row["profile_id"]]
            observed = {t: search[t] for t in wanted if search.get(t) not in (None, "")}
            values = impute(observed, cohort, stats)
            imputed = {t: {"value": v, "at": iso(now), "cohort": cohort} for t, v in values.items()}
            old = json.loads(row["imputed"]) if row["imputed"] else {}
            if {k: v["value"] for k, v in old.items()} != values:
                updates.append((row["profile_id"], json.dumps(imputed) if imputed else None))
        await conn.executemany("UPDATE profiles SET imputed = $2 WHERE profile_id = $1", updates)
        return len(updates)

    async def _staleness(self, conn: Any) -> int:
        now = datetime.now(UTC)
        rows = await conn.fetch(
            "SELECT profile_id, state->'traits' AS traits, stale_traits FROM profiles"
        )
        updates = []
        for row in rows:
            traits = json.loads(row["traits"])
            stale = sorted(
                name
                for name, entry in traits.items()
                if (d := definition_of(name)) is not None
                and d.stale_after is not None
                and now - parse_iso(entry["at"]) > d.stale_after
            )
            if stale != list(row["stale_traits"]):
                updates.append((row["profile_id"], stale))
        await conn.executemany(
            "UPDATE profiles SET stale_traits = $2 WHERE profile_id = $1", updates
        )
        return len(updates)

    async def advance_windows(self, now: datetime | None = None, limit: int = 500) -> int:
        """Rewrite the profiles whose windowed figures changed since they were written."""
        now = now or datetime.now(UTC)
        total = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                await lock_projection(conn, self._schema, exclusive=False)
                ids = [
                    row["profile_id"]
                    for row in await conn.fetch(
                        "SELECT profile_id FROM profiles WHERE windows_change_at <= $1 "
                        "ORDER BY windows_change_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                        now,
                        limit,
                    )
                ]
                stored = await repo.lock_profiles(conn, repo.LIVE, ids)
                messages = []
                for profile in stored.values():
                    message = await self._rewrite_search(conn, profile, now, "window clock")
                    if message is None:
                        await conn.execute(
                            "UPDATE profiles SET windows_change_at = $2 WHERE profile_id = $1",
                            profile.profile_id,
                            next_window_change(profile.state, now),
                        )
                    else:
                        messages.append(message)
                await enqueue(conn, messages)
            total += len(ids)
            if len(ids) < limit:
                return total


def _rfm_part(rfm: dict[str, Any] | None) -> Any:
    return None if rfm is None else {k: v for k, v in rfm.items() if k != "computed_at"}
