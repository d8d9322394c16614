"""Forgets accepted message ids older than the dedup retention, a chunk at a time."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from tailor_ingest.adapters import repository

log = structlog.get_logger(__name__)


class DedupRetention:
    def __init__(
        self, pool: asyncpg.Pool, retention: timedelta, interval_seconds: float = 600.0
    ) -> None:
        self._pool = pool
        self._retention = retention
        self._interval = interval_seconds
        self._stopping = asyncio.Event()

    async def prune_once(self, chunk: int = 10_000) -> int:
        cutoff = datetime.now(UTC) - self._retention
        total = 0
        while not self._stopping.is_set():
            async with self._pool.acquire() as conn:
                deleted = await repository.forget_old_message_ids(conn, cutoff, chunk)
            total += deleted
            if deleted < chunk:
                break
        return total

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.prune_once()
            except Exception as exc:  # Postgres away: try again next round
                log.warning("dedup retention skipped", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def stop(self) -> None:
        self._stopping.set()
