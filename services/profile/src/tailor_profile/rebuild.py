"""Rebuild by replay: EVENTS from the first message into fresh ``rebuild_*`` tables, then a
swap, while the live tables keep serving reads and the live projection keeps running.

1. Fresh tables are made ``LIKE`` the live ones; an ephemeral consumer replays EVENTS from
   sequence 1 through the same projection code, without publishing (every change was
   announced when it first happened).
2. Once the replay reaches the stream's last sequence at the start (``target``), the swap
   takes the projection lock alone — live batches wait — replays what arrived meanwhile,
   carries over the batch jobs' columns, and renames the fresh tables into place in the same
   transaction. Live consumers then go on from where they were; the events the replay
   already applied are in the swapped ``applied_events`` and are skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js import api as js_api

from tailor_core.db import Connection
from tailor_core.envelopes import parse
from tailor_core.errors import FailedPrecondition, NotFound
from tailor_core.streams import Naming, Stream
from tailor_profile.adapters.repository import PROJECTION_TABLES, REBUILD
from tailor_profile.projection import ProfileProjection, lock_projection

log = structlog.get_logger(__name__)

REPLAY_BATCH = 500
_SERIALS = {"merges": "merge_id", "trait_history": "entry_id"}


@dataclass(frozen=True, slots=True)
class Rebuild:
    rebuild_id: str
    state: str
    replayed: int
    target: int
    started_at: datetime
    finished_at: datetime | None
    error: str
    requested_by: str


def _rebuild(row: asyncpg.Record | None) -> Rebuild:
    assert row is not None
    return Rebuild(
        row["rebuild_id"],
        row["state"],
        row["replayed"],
        row["target"],
        row["started_at"],
        row["finished_at"],
        row["error"],
        row["requested_by"],
    )


class Rebuilder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        naming: Naming,
        schema: str,
        currency: str,
    ) -> None:
        self._pool = pool
        self._js = js
        self._naming = naming
        self._schema = schema
        self._projection = ProfileProjection(
            naming=naming, schema=schema, currency=currency, tables=REBUILD, publish=False
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, requested_by: str, reason: str) -> Rebuild:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE rebuilds IN EXCLUSIVE MODE")
            running = await conn.fetchval(
                "SELECT rebuild_id FROM rebuilds WHERE state IN ('REPLAYING', 'SWAPPING') "
                "AND started_at > now() - interval '1 day'"
            )
            if running:
                raise FailedPrecondition(f"rebuild {running} is already running")
            info = await self._js.stream_info(self._naming.stream_name(Stream.EVENTS))
            row = await conn.fetchrow(
                "INSERT INTO rebuilds (rebuild_id, state, target, requested_by, reason) "
                "VALUES ($1, 'REPLAYING', $2, $3, $4) RETURNING *",
                f"rb-{uuid.uuid4().hex[:16]}",
                info.state.last_seq,
                requested_by,
                reason,
            )
        rebuild = _rebuild(row)
        self._task = asyncio.create_task(self._run(rebuild))
        return rebuild

    async def status(self, rebuild_id: str = "") -> Rebuild:
        async with self._pool.acquire() as conn:
            if rebuild_id:
                row = await conn.fetchrow(
                    "SELECT * FROM rebuilds WHERE rebuild_id = $1", rebuild_id
                )
            else:
                row = await conn.fetchrow("SELECT * FROM rebuilds ORDER BY started_at DESC LIMIT 1")
        if row is None:
            raise NotFound("no such rebuild" if rebuild_id else "no rebuild has run")
        return _rebuild(row)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _run(self, rebuild: Rebuild) -> None:
        try:
            await self._prepare()
            replayed = await self._replay(rebuild)
            await self._set(rebuild.rebuild_id, "SWAPPING", replayed)
            await self._swap(rebuild, replayed)
        except asyncio.CancelledError:
            await self._fail(rebuild.rebuild_id, "stopped: the service shut down")
            raise
        except Exception as exc:
            log.error(
                "rebuild failed", rebuild_id=rebuild.rebuild_id, error_type=type(exc).__name__
            )
            await self._fail(rebuild.rebuild_id, f"{type(exc).__name__}: {exc}"[:500])

    async def _prepare(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            for table in PROJECTION_TABLES:
                await conn.execute(f"DROP TABLE IF EXISTS rebuild_{table}")
                await conn.execute(f"CREATE TABLE rebuild_{table} (LIKE {table} INCLUDING ALL)")

    async def _subscription(self) -> object:
        return await self._js.pull_subscribe(
            self._naming.all_subjects(Stream.EVENTS),
            durable=None,
            stream=self._naming.stream_name(Stream.EVENTS),
            config=js_api.ConsumerConfig(
                ack_policy=js_api.AckPolicy.NONE,
                deliver_policy=js_api.DeliverPolicy.ALL,
                inactive_threshold=300.0,
            ),
        )

    async def _replay(self, rebuild: Rebuild) -> int:
        self._sub = await self._subscription()
        self._last_seq = 0
        replayed = 0
        while self._last_seq < rebuild.target:
            async with self._pool.acquire() as conn, conn.transaction():
                count = await self._apply_next(conn)
            if count is None:
                break  # nothing left (the messages up to the target were purged)
            replayed += count
            await self._set(rebuild.rebuild_id, "REPLAYING", replayed)
        return replayed

    async def _apply_next(self, conn: Connection) -> int | None:
        """Fetch and apply one batch; None when the stream has nothing more."""
        try:
            batch = await self._sub.fetch(REPLAY_BATCH, timeout=1.0)  # type: ignore[attr-defined]
        except (nats.errors.TimeoutError, TimeoutError):
            return None
        self._last_seq = batch[-1].metadata.sequence.stream
        messages = [
            (
                (m.headers or {}).get("Nats-Msg-Id") or f"EVENTS:{m.metadata.sequence.stream}",
                parse(m.data),
            )
            for m in batch
        ]
        await self._projection.apply(conn, messages, lock=False)
        return len(batch)

    async def _swap(self, rebuild: Rebuild, replayed: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await lock_projection(conn, self._schema, exclusive=True)
            info = await self._js.stream_info(self._naming.stream_name(Stream.EVENTS))
            while self._last_seq < info.state.last_seq:
                count = await self._apply_next(conn)
                if count is None:
                    break
                replayed += count
            # The batch jobs' results carry over; they are recomputed on their schedule.
            await conn.execute(
                "UPDATE rebuild_profiles r SET rfm = p.rfm, imputed = p.imputed, "
                "stale_traits = p.stale_traits, search = r.search || jsonb_build_object("
                "'computed.rfm.recency', p.rfm->'recency', "
                "'computed.rfm.frequency', p.rfm->'frequency', "
                "'computed.rfm.monetary', p.rfm->'monetary', "
                "'computed.rfm.label', p.rfm->'label', "
                "'computed.rfm.computed_at', p.rfm->'computed_at') "
                "FROM profiles p WHERE p.profile_id = r.profile_id AND p.rfm IS NOT NULL"
            )
            await conn.execute(
                "UPDATE rebuild_profiles r SET imputed = p.imputed, stale_traits = p.stale_traits "
                "FROM profiles p WHERE p.profile_id = r.profile_id AND p.rfm IS NULL"
            )
            for table in PROJECTION_TABLES:
                column = _SERIALS.get(table)
                if column:
                    sequence = await conn.fetchval(
                        "SELECT pg_get_serial_sequence($1, $2)", table, column
                    )
                    await conn.execute(
                        f"ALTER SEQUENCE {sequence} OWNED BY rebuild_{table}.{column}"
                    )
                await conn.execute(f"DROP TABLE {table}")
                await conn.execute(f"ALTER TABLE rebuild_{table} RENAME TO {table}")
                for index in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND tablename = $1 AND indexname LIKE 'rebuild\\_%'",
                    table,
                ):
                    name = index["indexname"]
                    await conn.execute(
                        f'ALTER INDEX "{name}" RENAME TO "{name.removeprefix("rebuild_")}"'
                    )
            await conn.execute(
                "UPDATE rebuilds SET state = 'COMPLETED', replayed = $2, finished_at = now() "
                "WHERE rebuild_id = $1",
                rebuild.rebuild_id,
                replayed,
            )
        await self._close_sub()
        log.info("rebuild swapped in", rebuild_id=rebuild.rebuild_id, replayed=replayed)

    async def _close_sub(self) -> None:
        sub = getattr(self, "_sub", None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the ephemeral consumer goes away by itself
                log.debug("rebuild consumer already gone")

    async def _set(self, rebuild_id: str, state: str, replayed: int) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE rebuilds SET state = $2, replayed = $3 WHERE rebuild_id = $1",
                rebuild_id,
                state,
                replayed,
            )

    async def _fail(self, rebuild_id: str, error: str) -> None:
        await self._close_sub()
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE rebuilds SET state = 'FAILED', error = $2, finished_at = now() "
                "WHERE rebuild_id = $1",
                rebuild_id,
                error,
            )
