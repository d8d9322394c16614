"""The segment service's background loops: the membership clock (windows that expire and
sequences that time out, with no new event), the backfill of new segment versions over the
subjects already known, and the pruning of event facts no rule can reach any more."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from tailor_segment.adapters import definitions, facts
from tailor_segment.membership import Cause, LiveSegment, MembershipEngine, Selector, Targets

log = structlog.get_logger(__name__)

CLOCK_BATCH = 500
PRUNE_EVERY = timedelta(hours=1)


class _Loop:
    """Runs ``tick`` every ``interval`` seconds until stopped; ``wake`` runs it sooner."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.tick()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("background round failed", loop=type(self).__name__, error=str(exc))
                busy = False
            if busy:
                continue  # more work waiting: no pause
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)

    async def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    async def tick(self) -> bool:
        """One round; True when there is more to do right away."""
        raise NotImplementedError


class MembershipClock(_Loop):
    """Re-evaluates verdicts whose time has come (evaluations_due), so members leave when a
    window expires without any new event, and pending sequences enter when time runs out."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        engine: MembershipEngine,
        *,
        interval_seconds: float,
        retention: timedelta,
    ) -> None:
        super().__init__(interval_seconds)
        self._pool = pool
        self._engine = engine
        self._retention = retention
        self._pruned_at: datetime | None = None
        #: Seconds between a verdict falling due and its re-evaluation, last round (for lag).
        self.last_lag_seconds = 0.0

    async def tick(self) -> bool:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            due = await facts.take_due(conn, now, CLOCK_BATCH)
            if due:
                by_subject: dict[str, set[str]] = defaultdict(set)
                for segment_id, subject_id, _ in due:
                    by_subject[subject_id].add(segment_id)
                targets: Targets = {
                    subject: _selector(segments) for subject, segments in by_subject.items()
                }
                await self._engine.evaluate(conn, targets, now, Cause.CLOCK)
                self.last_lag_seconds = max((now - at).total_seconds() for _, _, at in due)
        if self._pruned_at is None or now - self._pruned_at > PRUNE_EVERY:
            async with self._pool.acquire() as conn:
                pruned = await facts.prune_events(conn, now - self._retention)
            self._pruned_at = now
            if pruned:
                log.info("event facts pruned", rows=pruned)
        return len(due) == CLOCK_BATCH


def _selector(segment_ids: set[str]) -> Selector:
    chosen = frozenset(segment_ids)

    def selected(segment: LiveSegment) -> bool:
        return segment.segment_id in chosen

    return selected


class Backfill(_Loop):
    """Evaluates a new segment version for every subject already known, a batch per
    transaction, resuming where it stopped after a restart; then marks it ACTIVE. Live
    events keep being evaluated meanwhile, under the same subject locks."""

    def __init__(
        self, pool: asyncpg.Pool, engine: MembershipEngine, *, batch: int, interval: float = 0.5
    ) -> None:
        super().__init__(interval)
        self._pool = pool
        self._engine = engine
        self._batch = batch

    async def tick(self) -> bool:
        async with self._pool.acquire() as conn:
            pending = await definitions.backfilling(conn)
        busy = False
        for segment_id, version, _ in pending:
            busy |= await self._batch_of(segment_id, version)
        return busy

    async def _batch_of(self, segment_id: str, version: int) -> bool:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            claimed = await definitions.claim_backfill(conn, segment_id, version)
            if claimed is False:
                return False
            after = claimed if isinstance(claimed, str) else None
            subjects = await facts.subject_page(conn, after, self._batch)
            cause = Cause.CREATED if version == 1 else Cause.REDEFINED
            chosen = _selector({segment_id})
            targets: Targets = dict.fromkeys(subjects, chosen)
            await self._engine.evaluate(conn, targets, now, cause)
            done = len(subjects) < self._batch
            await definitions.advance_backfill(
                conn, segment_id, subjects[-1] if subjects else after, done=done
            )
        if done:
            log.info("segment backfilled", segment=segment_id, version=version)
        return not done
