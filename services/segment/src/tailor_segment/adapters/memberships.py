"""SQL over current memberships."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tailor_core.db import Connection


@dataclass(frozen=True, slots=True)
class Member:
    segment_id: str
    subject_id: str
    entered_at: datetime
    reason: int
    explanation: str
    segment_version: int


_COLUMNS = "segment_id, subject_id, entered_at, reason, explanation, segment_version"


def _member(row: Any) -> Member:
    return Member(
        row["segment_id"],
        row["subject_id"],
        row["entered_at"],
        row["reason"],
        row["explanation"],
        row["segment_version"],
    )


async def of_subjects(conn: Connection, subject_ids: Sequence[str]) -> dict[str, dict[str, Member]]:
    """subject -> segment -> membership, for the subjects given."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM memberships WHERE subject_id = ANY($1::text[])",
        list(subject_ids),
    )
    found: dict[str, dict[str, Member]] = {s: {} for s in subject_ids}
    for row in rows:
        found[row["subject_id"]][row["segment_id"]] = _member(row)
    return found


async def enter(conn: Connection, members: Sequence[Member]) -> None:
    await conn.executemany(
        f"INSERT INTO memberships ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (segment_id, subject_id) DO NOTHING",
        [
            (m.segment_id, m.subject_id, m.entered_at, m.reason, m.explanation, m.segment_version)
            for m in members
        ],
    )


async def leave(conn: Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Remove (segment, subject) memberships."""
    if pairs:
        await conn.execute(
            "DELETE FROM memberships m USING unnest($1::text[], $2::text[]) AS t(g, s) "
            "WHERE m.segment_id = t.g AND m.subject_id = t.s",
            [g for g, _ in pairs],
            [s for _, s in pairs],
        )


async def page(
    conn: Connection, segment_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[Member]:
    """Members by entry time (then subject id), after the cursor."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM memberships WHERE segment_id = $1 AND "
        "($2::timestamptz IS NULL OR (entered_at, subject_id) > ($2, $3)) "
        "ORDER BY entered_at, subject_id LIMIT $4",
        segment_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return [_member(row) for row in rows]


async def of_segment(conn: Connection, segment_id: str) -> list[Member]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM memberships WHERE segment_id = $1 ORDER BY subject_id",
        segment_id,
    )
    return [_member(row) for row in rows]


async def member_sets(conn: Connection, segment_ids: Sequence[str]) -> dict[str, set[str]]:
    rows = await conn.fetch(
        "SELECT segment_id, subject_id FROM memberships WHERE segment_id = ANY($1::text[])",
        list(segment_ids),
    )
    found: dict[str, set[str]] = {g: set() for g in segment_ids}
    for row in rows:
        found[row["segment_id"]].add(row["subject_id"])
    return found
