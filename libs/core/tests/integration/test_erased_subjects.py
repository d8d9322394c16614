"""Tombstones of erased subjects: what arrives about them afterwards is recognised (by token,
never by id), and an erasure waits for writers already under way."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tailor_core.migrations import core_migrations, migrate
from tailor_core.privacy import erased, hold_off_erasure, remember_erased

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
        await asyncio.sleep(0)  # one turn: the erasure is now waiting on the lock
        done, _ = await asyncio.wait({erasure}, timeout=0.3)
        assert not done, "the erasure did not wait for the writer"
        await writing.commit()
        await asyncio.wait_for(erasure, timeout=10)
        await erasing.commit()
        assert await erased(writer, ["carol"]) == {"carol"}
    finally:
        await pool.release(writer)
        await pool.release(eraser)
