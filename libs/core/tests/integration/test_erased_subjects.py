"""Tombstones of erased subjects: what arrives about them afterwards is recognised (by token,
never by id), and an erasure waits for writers already under way."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tailor_core.migrations import core_migrations, migrate
from tailor_core.privacy import erased, hold_off_erasure, remember_erased
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration]


async def test_an_erased_subject_is_recognised_by_its_token_only(
    pool: asyncpg.Pool, pg_schema: str
) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, pg_schema, core_migrations())
        async with conn.transaction():
            await remember_erased(conn, ["alice@example.com"])
        assert await erased(conn, ["alice@example.com", "bob"]) == {"alice@example.com"}
        stored = await conn.fetchval("SELECT string_agg(token, ',') FROM erased_subjects")
        assert "alice" not in stored


async def test_an_erasure_waits_for_a_writer_in_flight(pool: asyncpg.Pool, pg_schema: str) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, pg_schema, core_migrations())
    writer = await pool.acquire()
    eraser = await pool.acquire()
    try:
        writing = writer.transaction()
        await writing.start()
        await hold_off_erasure(writer)
        erasing = eraser.transaction()
        await erasing.start()
        erasure = asyncio.create_task(remember_erased(eraser, ["carol"]))
        eraser_pid = eraser.get_server_pid()

        async def erasure_blocked_on_the_lock() -> bool:
            waiting = await writer.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", eraser_pid
            )
            return bool(waiting == "Lock")

        await wait_until(erasure_blocked_on_the_lock, timeout=10, message="erasure waits")
        assert not erasure.done()
        await writing.commit()
        await asyncio.wait_for(erasure, timeout=10)
        await erasing.commit()
        assert await erased(writer, ["carol"]) == {"carol"}
    finally:
        await pool.release(writer)
        await pool.release(eraser)
