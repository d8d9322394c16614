"""Durable pull consumers with an inbox: exactly-once effects over at-least-once delivery.

For each message, the consumer records ``(consumer, event_id)`` in the service's ``inbox``
table in the same transaction as the handler's projection change. A redelivered message
finds its id already there and changes nothing. A message whose handler keeps failing is
published to the dead-letter subject with the error after ``max_deliver`` attempts and
terminated, so one poison message cannot stall a partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tailor_core import failpoints
from tailor_core.bus import ConsumerSpec, provision_consumer
from tailor_core.db import Connection
from tailor_core.logs import bind_event_id
from tailor_core.metrics import INBOX_APPLIED, INBOX_DEAD_LETTERED, INBOX_DUPLICATES

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message as a handler sees it."""

    event_id: str
    subject: str
    data: bytes
    headers: Mapping[str, str]
    stream_sequence: int
    delivery_count: int


#: A handler changes the projection through ``conn``, inside the inbox transaction.
Handler = Callable[[Connection, InboundMessage], Awaitable[None]]
#: A batch handler gets every new message of a fetched batch at once, in stream order, so
#: it can write them with one ``executemany`` instead of a round trip per message.
BatchHandler = Callable[[Connection, Sequence[InboundMessage]], Awaitable[None]]


def _inbound(msg: Msg) -> InboundMessage:
    meta = msg.metadata
    headers = dict(msg.headers or {})
    stream_seq = meta.sequence.stream
    return InboundMessage(
        # Messages published by our relays carry Nats-Msg-Id; anything else falls back to
        # its position in the stream, which is just as unique and stable.
        event_id=headers.get("Nats-Msg-Id") or f"{meta.stream}:{stream_seq}",
        subject=msg.subject,
        data=msg.data,
        headers=headers,
        stream_sequence=stream_seq,
        delivery_count=meta.num_delivered,
    )


class InboxConsumer:
    """Runs ``handler`` over a durable consumer's messages, exactly once per event id."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        dead_letter_subject: str,
        batch_size: int = 100,
        fetch_timeout_seconds: float = 1.0,
        retry_delay_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._js = js
        self._spec = spec
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self._handler = handler
        self._batch_handler = batch_handler
        self._dead_letter_subject = dead_letter_subject
        self._batch_size = batch_size
        self._fetch_timeout = fetch_timeout_seconds
        self._retry_delay = retry_delay_seconds
        self._stopping = asyncio.Event()
        self.processed_total = 0
        self.duplicates_total = 0
        self.dead_lettered_total = 0

    @property
    def name(self) -> str:
        return self._spec.durable

    async def run(self) -> None:
        """Consume until :meth:`stop`; the batch in flight is finished and acknowledged."""
        await provision_consumer(self._js, self._spec)
        subscription = await self._js.pull_subscribe_bind(
            self._spec.durable, stream=self._spec.stream
        )
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    batch = await subscription.fetch(self._batch_size, timeout=self._fetch_timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue  # nothing to fetch (nats-py raises either kind)
                except nats.errors.Error as exc:
                    # NATS away or reconnecting: wait and fetch again; nothing was taken.
                    failures += 1
                    log.warning(
                        "fetch failed; retrying", consumer=self.name, error=type(exc).__name__
                    )
                    await asyncio.sleep(min(0.2 * failures, 5.0))
                    continue
                failures = 0
                await self.process_batch(batch)
        finally:
            await subscription.unsubscribe()

    async def stop(self) -> None:
        self._stopping.set()

    async def process_batch(self, batch: Sequence[Msg]) -> None:
        """Apply a fetched batch: one transaction for all, then one per message on failure.

        The fast path keeps throughput close to raw batched writes; the slow path isolates
        the message that failed, so the others are not held back by it.
        """
        inbound = [_inbound(msg) for msg in batch]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await self._apply(conn, inbound)
        except Exception:
            for msg, message in zip(batch, inbound, strict=True):
                await self._process_one(msg, message)
            return
        self._count(len(inbound), fresh)
        failpoints.hit("inbox.after_commit")
        await asyncio.gather(*(msg.ack() for msg in batch))

    def _count(self, received: int, fresh: int) -> None:
        self.processed_total += fresh
        self.duplicates_total += received - fresh
        INBOX_APPLIED.labels(self.name).inc(fresh)
        INBOX_DUPLICATES.labels(self.name).inc(received - fresh)

    async def _apply(self, conn: Connection, messages: Sequence[InboundMessage]) -> int:
        """Record the event ids and run the handler on the new ones; return how many were new."""
        recorded = await conn.fetch(
            "INSERT INTO inbox (consumer, event_id, stream_seq) "
            "SELECT $1, e, s FROM unnest($2::text[], $3::bigint[]) AS t(e, s) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            self._spec.durable,
            [m.event_id for m in messages],
            [m.stream_sequence for m in messages],
        )
        new_ids = {row["event_id"] for row in recorded}
        fresh = []
        for message in messages:  # stream order; a repeat inside the batch counts once
            if message.event_id in new_ids:
                new_ids.discard(message.event_id)
                fresh.append(message)
        if self._batch_handler is not None:
            if fresh:
                await self._batch_handler(conn, fresh)
        elif self._handler is not None:
            for message in fresh:
                with bind_event_id(message.event_id):
                    await self._handler(conn, message)
        return len(fresh)

    async def _process_one(self, msg: Msg, message: InboundMessage) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await self._apply(conn, [message])
        except Exception as exc:
            await self._failed(msg, message, exc)
            return
        self._count(1, fresh)
        await msg.ack()

    async def _failed(self, msg: Msg, message: InboundMessage, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        if message.delivery_count < self._spec.max_deliver:
            log.warning(
                "message handling failed, will retry",
                consumer=self.name,
                error_type=type(exc).__name__,
                delivery=message.delivery_count,
            )
            await msg.nak(delay=self._retry_delay * message.delivery_count)
            return
        headers = {
            "Nats-Msg-Id": f"dead:{self.name}:{message.event_id}",
            "Tailor-Original-Subject": message.subject,
            "Tailor-Original-Sequence": str(message.stream_sequence),
            "Tailor-Event-Id": message.event_id,
            "Tailor-Consumer": self.name,
            "Tailor-Error": error,
        }
        await self._js.publish(self._dead_letter_subject, message.data, headers=headers)
        self.dead_lettered_total += 1
        INBOX_DEAD_LETTERED.labels(self.name).inc()
        log.error(
            "message dead-lettered",
            consumer=self.name,
            error_type=type(exc).__name__,
            deliveries=message.delivery_count,
        )
        await msg.term()
