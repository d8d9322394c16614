"""Quality counts per source, rule and minute: kept in memory, written once a second.

Counting in the request's transaction would make every batch of a source update the same
rows, serializing them; one upsert per second carries the same information. A crash loses
at most the last second of counts, never an event. Prometheus counters carry the same
figures live.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Counter as PromCounter

from tailor_ingest.adapters import repository

log = structlog.get_logger(__name__)

EVENTS = PromCounter(
    "tailor_ingest_events_total", "Events by source and outcome", ["source", "outcome"]
)
REASONS = PromCounter(
    "tailor_ingest_issues_total",
    "Rejections, warnings and suppressions by source and reason",
    ["source", "kind", "reason"],
)


def _minute() -> datetime:
    return datetime.fromtimestamp(time.time() // 60 * 60, UTC)


class QualityCounters:
    def __init__(self, pool: asyncpg.Pool, flush_seconds: float = 1.0) -> None:
        self._pool = pool
        self._flush_seconds = flush_seconds
        self._pending: Counter[repository.CountKey] = Counter()
        self._stopping = asyncio.Event()

    def count(
        self, source: str, metric: str, reason: str = "", purpose: str = "", n: int = 1
    ) -> None:
        """Add ``n`` to a metric: an outcome (reason empty) or a reason row."""
        self._pending[(source, _minute(), metric, reason, purpose)] += n
        if reason:
            REASONS.labels(source, metric, reason).inc(n)
        else:
            EVENTS.labels(source, metric).inc(n)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()
        try:
            async with self._pool.acquire() as conn:
                await repository.add_counts(conn, dict(batch))
        except Exception as exc:  # Postgres away: keep the counts for the next flush
            log.warning("quality counts not written; will retry", error=type(exc).__name__)
            self._pending.update(batch)

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._flush_seconds)
            await self.flush()

    async def stop(self) -> None:
        self._stopping.set()
