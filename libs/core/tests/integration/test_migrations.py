"""Migrations: applied once, recorded, and safe when replicas start at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tailor_core.migrations import Migration, MigrationError, core_migrations, migrate
from tailor_core.testing.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]


async def test_two_processes_migrating_one_schema_at_once_both_succeed_with_one_result(
    infra: Infra, pg_schema: str, worker: Callable[..., Any]
) -> None:
    args = {"dsn": infra.pg_dsn, "schema": pg_schema}
    (code_a, out_a), (code_b, out_b) = await asyncio.gather(
        worker("migrate", args), worker("migrate", args)
    )
    assert (code_a, code_b) == (0, 0)
    applied = sorted([out_a[-1]["applied"], out_b[-1]["applied"]])
    # exactly one of them did the work; the other waited for the lock and found it done
    assert applied == [[], [m.version for m in core_migrations()]]
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        rows = await conn.fetch(
            f'SELECT component, version FROM "{pg_schema}".schema_migrations ORDER BY version'
        )
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg_schema
        )
    finally:
        await conn.close()
    assert [(r["component"], r["version"]) for r in rows] == [
        ("tailor_core", m.version) for m in core_migrations()
    ]
    assert {r["table_name"] for r in tables} >= {
        "outbox",
        "inbox",
        "erased_subjects",
        "schema_migrations",
    }


async def test_a_migration_edited_after_it_was_applied_is_refused(
    infra: Infra, pg_schema: str
) -> None:
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        first = Migration("demo", 1, "create_things", "CREATE TABLE things (id int)")
        assert await migrate(conn, pg_schema, [first]) == [first]
        assert await migrate(conn, pg_schema, [first]) == []
        edited = Migration("demo", 1, "create_things", "CREATE TABLE things (id bigint)")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, pg_schema, [edited])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(
    infra: Infra, pg_schema: str
) -> None:
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        good = Migration("demo", 1, "good", "CREATE TABLE good (id int)")
        bad = Migration("demo", 2, "bad", "CREATE TABLE broken (id nosuchtype)")
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, pg_schema, [good, bad])
        exists = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", pg_schema
        )
        assert exists == 0
    finally:
        await conn.close()
