"""SQL for subject data keys (wrapped) in the consent schema."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tailor_core.db import Connection


@dataclass(frozen=True, slots=True)
class StoredKey:
    subject_id: str
    key_id: str
    wrapped: bytes | None  # None once destroyed
    master_key_id: str


def _stored(row: asyncpg.Record) -> StoredKey:
    wrapped = row["wrapped"]
    return StoredKey(
        row["subject_id"],
        row["key_id"],
        bytes(wrapped) if wrapped is not None else None,
        row["master_key_id"],
    )


async def get(conn: Connection, subject_id: str) -> StoredKey | None:
    row = await conn.fetchrow("SELECT * FROM data_keys WHERE subject_id = $1", subject_id)
    return _stored(row) if row else None


async def insert_if_absent(conn: Connection, key: StoredKey) -> StoredKey:
    """Store ``key`` unless the subject has one already; return the subject's key either way."""
    await conn.execute(
        "INSERT INTO data_keys (subject_id, key_id, wrapped, master_key_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (subject_id) DO NOTHING",
        key.subject_id,
        key.key_id,
        key.wrapped,
        key.master_key_id,
    )
    stored = await get(conn, key.subject_id)
    assert stored is not None
    return stored


async def wrapped_under_other_masters(
    conn: Connection, master_key_id: str, limit: int
) -> list[StoredKey]:
    rows = await conn.fetch(
        "SELECT * FROM data_keys WHERE wrapped IS NOT NULL AND master_key_id <> $1"
        " ORDER BY subject_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        master_key_id,
        limit,
    )
    return [_stored(row) for row in rows]


async def rewrap(conn: Connection, subject_id: str, wrapped: bytes, master_key_id: str) -> None:
    await conn.execute(
        "UPDATE data_keys SET wrapped = $2, master_key_id = $3 WHERE subject_id = $1",
        subject_id,
        wrapped,
        master_key_id,
    )


async def destroy(conn: Connection, subject_id: str) -> bool:
    """Shred the subject's key; True when there was one to destroy."""
    status = await conn.execute(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = now()"
        " WHERE subject_id = $1 AND wrapped IS NOT NULL",
        subject_id,
    )
    return status.endswith(" 1")
