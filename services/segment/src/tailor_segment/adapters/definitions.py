"""SQL over segment definitions and their versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tailor_core.db import Connection

LIVE_STATES = ("BACKFILLING", "ACTIVE")


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """A segment at one version, as stored."""

    segment_id: str
    version: int
    state: str
    name: str
    description: str
    rule: bytes
    rule_text: str
    purpose: str
    references: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    updated_by: str
    current_version: int
    promoted_run: str | None = None
    promoted_cluster: int | None = None


_SELECT = (
    "SELECT s.segment_id, v.version, s.state, v.name, v.description, v.rule, v.rule_text, "
    "v.purpose, v.references_, s.created_at, v.created_at AS updated_at, v.created_by, "
    "s.version AS current_version, s.promoted_run, s.promoted_cluster "
    "FROM segments s JOIN segment_versions v ON v.segment_id = s.segment_id "
)


def _segment(row: Any) -> StoredSegment:
    return StoredSegment(
        row["segment_id"],
        row["version"],
        row["state"],
        row["name"],
        row["description"],
        bytes(row["rule"]),
        row["rule_text"],
        row["purpose"],
        tuple(row["references_"]),
        row["created_at"],
        row["updated_at"],
        row["created_by"],
        row["current_version"],
        row["promoted_run"],
        row["promoted_cluster"],
    )


async def exists(conn: Connection, segment_id: str) -> bool:
    """Whether the id was ever used (deleted segments keep theirs)."""
    return bool(await conn.fetchval("SELECT 1 FROM segments WHERE segment_id = $1", segment_id))


async def create(
    conn: Connection,
    segment: StoredSegment,
) -> None:
    await conn.execute(
        "INSERT INTO segments (segment_id, version, state, purpose, created_at, updated_at, "
        "promoted_run, promoted_cluster) VALUES ($1, $2, $3, $4, $5, $5, $6, $7)",
        segment.segment_id,
        segment.version,
        segment.state,
        segment.purpose,
        segment.created_at,
        segment.promoted_run,
        segment.promoted_cluster,
    )
    await add_version(conn, segment)


async def add_version(conn: Connection, segment: StoredSegment) -> None:
    await conn.execute(
        "INSERT INTO segment_versions (segment_id, version, name, description, rule, "
        "rule_text, purpose, references_, created_at, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        segment.segment_id,
        segment.version,
        segment.name,
        segment.description,
        segment.rule,
        segment.rule_text,
        segment.purpose,
        list(segment.references),
        segment.updated_at,
        segment.updated_by,
    )


async def set_current(
    conn: Connection, segment_id: str, version: int, state: str, purpose: str, at: datetime
) -> None:
    """Point the segment at ``version`` and restart its backfill."""
    await conn.execute(
        "UPDATE segments SET version = $2, state = $3, purpose = $4, updated_at = $5, "
        "backfill_after = NULL WHERE segment_id = $1",
        segment_id,
        version,
        state,
        purpose,
        at,
    )


async def get(
    conn: Connection, segment_id: str, version: int = 0, *, lock: bool = False
) -> StoredSegment | None:
    """The segment at ``version`` (0 = current); ``lock`` row-locks it for an update."""
    query = _SELECT + "WHERE s.segment_id = $1 AND v.version = "
    query += "s.version" if version == 0 else "$2"
    if lock:
        query += " FOR UPDATE OF s"
    args: list[Any] = [segment_id] if version == 0 else [segment_id, version]
    row = await conn.fetchrow(query, *args)
    return _segment(row) if row else None


async def live(conn: Connection) -> list[StoredSegment]:
    """Every segment whose membership is kept (backfilling or active), current versions."""
    rows = await conn.fetch(
        _SELECT + "WHERE v.version = s.version AND s.state = ANY($1::text[]) ORDER BY s.segment_id",
        list(LIVE_STATES),
    )
    return [_segment(row) for row in rows]


async def page(
    conn: Connection, *, purpose: str, include_deleted: bool, after: str, limit: int
) -> list[StoredSegment]:
    rows = await conn.fetch(
        _SELECT + "WHERE v.version = s.version AND s.segment_id > $1 "
        "AND ($2 = '' OR s.purpose = $2) AND ($3 OR s.state <> 'DELETED') "
        "ORDER BY s.segment_id LIMIT $4",
        after,
        purpose,
        include_deleted,
        limit,
    )
    return [_segment(row) for row in rows]


async def versions(
    conn: Connection, segment_id: str, *, before: int, limit: int
) -> list[StoredSegment]:
    """Versions older than ``before`` (0 = from the newest), newest first."""
    rows = await conn.fetch(
        _SELECT + "WHERE s.segment_id = $1 AND ($2 = 0 OR v.version < $2) "
        "ORDER BY v.version DESC LIMIT $3",
        segment_id,
        before,
        limit,
    )
    return [_segment(row) for row in rows]


async def referring_to(conn: Connection, segment_id: str) -> list[str]:
    """Live segments whose current rule refers to ``segment_id``."""
    rows = await conn.fetch(
        "SELECT s.segment_id FROM segments s JOIN segment_versions v "
        "ON v.segment_id = s.segment_id AND v.version = s.version "
        "WHERE s.state <> 'DELETED' AND $1 = ANY(v.references_) ORDER BY 1",
        segment_id,
    )
    return [row["segment_id"] for row in rows]


async def mark_deleted(conn: Connection, segment_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE segments SET state = 'DELETED', updated_at = $2 WHERE segment_id = $1",
        segment_id,
        at,
    )


async def backfilling(conn: Connection) -> list[tuple[str, int, str | None]]:
    """Segments whose current version still has subjects to evaluate: (id, version, after)."""
    rows = await conn.fetch(
        "SELECT segment_id, version, backfill_after FROM segments "
        "WHERE state = 'BACKFILLING' ORDER BY updated_at"
    )
    return [(r["segment_id"], r["version"], r["backfill_after"]) for r in rows]


async def claim_backfill(conn: Connection, segment_id: str, version: int) -> str | bool | None:
    """Lock a backfill for one batch; False when another replica holds it or it is done.
    Returns the subject id the last batch ended at (None: from the start)."""
    row = await conn.fetchrow(
        "SELECT backfill_after FROM segments WHERE segment_id = $1 AND version = $2 "
        "AND state = 'BACKFILLING' FOR UPDATE SKIP LOCKED",
        segment_id,
        version,
    )
    if row is None:
        return False
    after: str | None = row["backfill_after"]
    return after


async def advance_backfill(
    conn: Connection, segment_id: str, after: str | None, *, done: bool
) -> None:
    await conn.execute(
        "UPDATE segments SET backfill_after = $2, "
        "state = CASE WHEN $3 THEN 'ACTIVE' ELSE state END WHERE segment_id = $1",
        segment_id,
        after,
        done,
    )


async def sizes(conn: Connection, segment_ids: Sequence[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT segment_id, count(*) AS n FROM memberships "
        "WHERE segment_id = ANY($1::text[]) GROUP BY segment_id",
        list(segment_ids),
    )
    return {row["segment_id"]: row["n"] for row in rows}
