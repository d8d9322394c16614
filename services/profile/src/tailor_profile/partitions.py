"""Replicas share the EVENTS partitions: each partition has one durable consumer, and one
replica at a time runs it, so a subject's events are applied in stream order.

Ownership is a Postgres session advisory lock per partition, held on a connection kept for
the purpose: a replica that dies loses its connection and with it its locks, and another
replica takes the partitions over. Every replica records a heartbeat; each aims for an even
share (partitions / live replicas, rounded up), takes free partitions up to it and lets go
of partitions beyond it, finishing the batch in hand first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from nats.js import JetStreamContext

from tailor_core.bus import ConsumerSpec
from tailor_core.db import Connection
from tailor_core.envelopes import parse
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.metrics import PARTITIONS_OWNED
from tailor_core.streams import Naming, Stream
from tailor_profile.projection import ProfileProjection, hash_text

log = structlog.get_logger(__name__)


class ProjectionConsumer(InboxConsumer):
    """A partition's consumer. Its dedup is the projection's own ``applied_events`` table
    (rebuilt and swapped with the projection) instead of the core inbox."""

    def __init__(self, projection: ProfileProjection, **kwargs: object) -> None:
        super().__init__(batch_handler=self._unused, **kwargs)  # type: ignore[arg-type]
        self._projection = projection

    @staticmethod
    async def _unused(conn: Connection, messages: Sequence[InboundMessage]) -> None:
        raise AssertionError("ProjectionConsumer applies batches itself")

    async def _apply(self, conn: Connection, messages: Sequence[InboundMessage]) -> int:
        return await self._projection.apply(
            conn, [(message.event_id, parse(message.data)) for message in messages]
        )


def consumer_name(partition: int) -> str:
    return f"profile_events_p{partition}"


class PartitionOwner:
    """Takes this replica's share of the partitions and runs their consumers."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        naming: Naming,
        schema: str,
        projection: ProfileProjection,
        heartbeat_seconds: float = 2.0,
        batch_size: int = 500,
    ) -> None:
        self._pool = pool
        self._js = js
        self._naming = naming
        self._schema_key = hash_text(schema)
        self._projection = projection
        self._heartbeat = heartbeat_seconds
        self._batch_size = batch_size
        self.member_id = f"m-{uuid.uuid4().hex[:12]}"
        self._running: dict[int, tuple[InboxConsumer, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()
        self._conn: Any = None  # a pool connection held for the session locks

    @property
    def owned(self) -> list[int]:
        return sorted(self._running)

    def consumers(self) -> list[InboxConsumer]:
        return [consumer for consumer, _ in self._running.values()]

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self._rebalance()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # Lost the lock connection: the locks went with it, so stop every
                    # consumer before another replica starts them, then start afresh.
                    log.warning("partition ownership lost", error=type(exc).__name__)
                    await self._release_all(unlock=False)
                    await self._close_connection()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._heartbeat)
        finally:
            await self._release_all(unlock=True)
            with contextlib.suppress(Exception):
                async with self._pool.acquire() as conn:
                    await conn.execute(
                        "DELETE FROM projection_members WHERE member_id = $1", self.member_id
                    )
            await self._close_connection()

    async def stop(self) -> None:
        self._stopping.set()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._pool.acquire()
        return self._conn

    async def _close_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def _rebalance(self) -> None:
        conn = await self._connection()
        stale_after = self._heartbeat * 3
        live = await conn.fetchval(
            "WITH beat AS (INSERT INTO projection_members (member_id, heartbeat_at) "
            "VALUES ($1, now()) ON CONFLICT (member_id) DO UPDATE SET heartbeat_at = now()) "
            "SELECT count(*) + 1 FROM projection_members WHERE member_id <> $1 "
            "AND heartbeat_at > now() - make_interval(secs => $2)",
            self.member_id,
            stale_after,
        )
        await conn.execute(
            "DELETE FROM projection_members WHERE heartbeat_at < now() - make_interval(secs => $1)",
            stale_after * 10,
        )
        for partition, (_, task) in list(self._running.items()):
            if task.done():  # a consumer that died (it logged why) is started again
                del self._running[partition]
                self._start(partition)
        partitions = self._naming.partitions
        share = math.ceil(partitions / max(int(live), 1))
        for partition in self.owned[share:]:
            await self._release(partition, unlock=True)
        # Start from a different partition per replica, so replicas rarely race for one.
        offset = hash_text(self.member_id) % partitions
        for step in range(partitions):
            if len(self._running) >= share:
                break
            partition = (offset + step) % partitions
            if partition in self._running:
                continue
            if await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", self._schema_key, partition
            ):
                self._start(partition)

    def _start(self, partition: int) -> None:
        spec = ConsumerSpec(
            stream=self._naming.stream_name(Stream.EVENTS),
            durable=consumer_name(partition),
            filter_subject=self._naming.partition_filter(Stream.EVENTS, partition),
            description=f"profile projection, partition {partition}",
            max_ack_pending=self._batch_size * 2,
        )
        consumer = ProjectionConsumer(
            self._projection,
            pool=self._pool,
            js=self._js,
            spec=spec,
            dead_letter_subject=self._naming.dead_letter_subject("profile", spec.durable),
            batch_size=self._batch_size,
            fetch_timeout_seconds=0.5,
        )
        task = asyncio.create_task(consumer.run(), name=spec.durable)
        self._running[partition] = (consumer, task)
        PARTITIONS_OWNED.labels("profile").set(len(self._running))
        log.info("partition taken", partition=partition, member=self.member_id)

    async def _release(self, partition: int, *, unlock: bool) -> None:
        consumer, task = self._running.pop(partition)
        PARTITIONS_OWNED.labels("profile").set(len(self._running))
        await consumer.stop()
        with contextlib.suppress(Exception):
            await task
        if unlock and self._conn is not None and not self._conn.is_closed():
            await self._conn.execute(
                "SELECT pg_advisory_unlock($1, $2)", self._schema_key, partition
            )
        log.info("partition released", partition=partition, member=self.member_id)

    async def _release_all(self, *, unlock: bool) -> None:
        for partition in self.owned:
            with contextlib.suppress(Exception):
                await self._release(partition, unlock=unlock)
