"""Transactional outbox and its relay to JetStream (ARCHITECTURE.md §4).

A service writes its state change and the events announcing it in one Postgres
transaction (:func:`enqueue`). The :class:`OutboxRelay` publishes committed rows in order
with ``Nats-Msg-Id`` set to the event id and deletes them once JetStream has acknowledged
them. A crash between commit and publish loses nothing (the rows stay); a crash between
publish and delete publishes again, and JetStream's duplicate window drops the copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
import structlog
from nats.js import JetStreamContext

from tailor_core import failpoints
from tailor_core.bus import publish_each
from tailor_core.db import Connection

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to publish: ``event_id`` becomes its ``Nats-Msg-Id``."""

    event_id: str
    subject: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


async def enqueue(conn: Connection, messages: Iterable[OutboundMessage]) -> None:
    """Add ``messages`` to the outbox inside the caller's transaction.

    An event id already waiting in the outbox is kept once.
    """
    rows = [(m.event_id, m.subject, m.payload, json.dumps(dict(m.headers))) for m in messages]
    if rows:
        await conn.executemany(
            "INSERT INTO outbox (event_id, subject, payload, headers) "
            "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (event_id) DO NOTHING",
            rows,
        )


def _message(row: asyncpg.Record) -> tuple[str, bytes, dict[str, str]]:
    headers = json.loads(row["headers"]) if row["headers"] else {}
    headers["Nats-Msg-Id"] = row["event_id"]
    return row["subject"], bytes(row["payload"]), headers


class OutboxRelay:
    """Publishes a schema's outbox to JetStream; safe to run in every replica.

    One replica relays at a time (a transaction-level advisory lock per batch), which
    keeps the order of the outbox and lets another replica take over at once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        schema: str,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        publish_timeout_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._js = js
        self._schema = schema
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._publish_timeout = publish_timeout_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.published_total = 0

    @property
    def channel(self) -> str:
        return f"tailor_outbox_{self._schema}"

    async def relay_once(self) -> int:
        """Publish and delete up to one batch; return how many rows were relayed."""
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('tailor.outbox.' || $1, 0))",
                self._schema,
            )
            if not locked:
                return 0
            rows = await conn.fetch(
                "SELECT position, event_id, subject, payload, headers FROM outbox "
                "ORDER BY position LIMIT $1",
                self._batch_size,
            )
            if not rows:
                return 0
            failpoints.hit("outbox.before_publish")
            # Written to the socket in outbox order, so the stream keeps it; then we wait for
            # every acknowledgement at once.
            results = await publish_each(
                self._js, [_message(row) for row in rows], timeout=self._publish_timeout
            )
            failpoints.hit("outbox.after_publish")
            acked = []
            failure: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if result is not None:
                    failure = result
                    break  # keep this row and all later ones, in order, for the next try
                acked.append(row["position"])
            if acked:
                await conn.execute("DELETE FROM outbox WHERE position = ANY($1::bigint[])", acked)
                failpoints.hit("outbox.after_delete")
            self.published_total += len(acked)
        if failure is not None:
            log.warning("outbox publish failed", error=type(failure).__name__, relayed=len(acked))
            raise failure
        return len(acked)

    async def run(self) -> None:
        """Relay until :meth:`stop`; woken by Postgres NOTIFY, polling as a fallback."""
        listener = await self._pool.acquire()
        await listener.add_listener(self.channel, self._notified)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    relayed = await self.relay_once()
                except Exception as exc:  # NATS or Postgres away: keep the rows, try again
                    log.warning("outbox relay retrying", error=type(exc).__name__)
                    relayed = 0
                if relayed >= self._batch_size:
                    continue  # more waiting: go on without sleeping
                await self._sleep()
        finally:
            await listener.remove_listener(self.channel, self._notified)
            await self._pool.release(listener)

    async def _sleep(self) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {wake, stop}, timeout=self._poll_seconds, return_when="FIRST_COMPLETED"
            )
        finally:
            wake.cancel()
            stop.cancel()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in flight."""
        self._stopping.set()

    async def pending(self) -> int:
        """Rows waiting in the outbox."""
        async with self._pool.acquire() as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM outbox")
            return count
