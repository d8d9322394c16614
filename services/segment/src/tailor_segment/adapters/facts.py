"""SQL over what rules are evaluated on: subjects' traits and event facts, identities, and
the clock's due evaluations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from tailor_core.db import Connection
from tailor_segment.domain.evaluation import EventFact


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def resolve(conn: Connection, subject_ids: Iterable[str]) -> dict[str, str]:
    """Each id -> the profile it belongs to now (itself unless merged away)."""
    ids = sorted(set(subject_ids))
    rows = await conn.fetch(
        "SELECT subject_id, profile_id FROM identities WHERE subject_id = ANY($1::text[])", ids
    )
    found = {row["subject_id"]: row["profile_id"] for row in rows}
    return {i: found.get(i, i) for i in ids}


async def touch(conn: Connection, seen: Mapping[str, datetime | None]) -> set[str]:
    """Make sure each subject has a row (moving its last_seen forward); return the subjects
    that had none before."""
    ordered = sorted(seen.items())
    rows = await conn.fetch(
        "INSERT INTO subjects (subject_id, last_seen) "
        "SELECT * FROM unnest($1::text[], $2::timestamptz[]) "
        "ON CONFLICT (subject_id) DO UPDATE SET updated_at = now(), "
        "last_seen = GREATEST(subjects.last_seen, excluded.last_seen) "
        "RETURNING subject_id, (xmax = 0) AS inserted",
        [s for s, _ in ordered],
        [at for _, at in ordered],
    )
    return {row["subject_id"] for row in rows if row["inserted"]}


async def lock(conn: Connection, subject_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Row-lock subjects (in id order, so concurrent batches cannot deadlock) and return
    their trait maps. Evaluations of one subject are serialised by this lock."""
    rows = await conn.fetch(
        "SELECT subject_id, traits FROM subjects WHERE subject_id = ANY($1::text[]) "
        "ORDER BY subject_id FOR UPDATE",
        sorted(set(subject_ids)),
    )
    return {row["subject_id"]: orjson.loads(row["traits"]) for row in rows}


async def add_events(conn: Connection, events: Sequence[tuple[str, str, EventFact]]) -> None:
    """Store (event id, subject id, fact) rows; an id seen before is kept as it was."""
    await conn.executemany(
        "INSERT INTO subject_events (event_id, subject_id, name, at, fields) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        [(eid, sid, f.name, f.at, _json(dict(f.fields))) for eid, sid, f in events],
    )


async def events_of(
    conn: Connection, subject_ids: Sequence[str], since: datetime | None
) -> dict[str, list[EventFact]]:
    """Event facts of the subjects (from ``since``, or all), oldest first."""
    rows = await conn.fetch(
        "SELECT subject_id, name, at, fields FROM subject_events "
        "WHERE subject_id = ANY($1::text[]) AND ($2::timestamptz IS NULL OR at > $2) "
        "ORDER BY subject_id, at, event_id",
        list(subject_ids),
        since,
    )
    found: dict[str, list[EventFact]] = {s: [] for s in subject_ids}
    for row in rows:
        found[row["subject_id"]].append(
            EventFact(row["name"], row["at"], orjson.loads(row["fields"]))
        )
    return found


async def update_traits(
    conn: Connection, subject_id: str, values: Mapping[str, Any], removed: Sequence[str]
) -> None:
    """Merge announced trait values into the subject's map; drop ``removed`` names."""
    await conn.execute(
        "INSERT INTO subjects (subject_id, traits) VALUES ($1, $2::jsonb - $3::text[]) "
        "ON CONFLICT (subject_id) DO UPDATE SET "
        "traits = (subjects.traits || excluded.traits) - $3::text[], updated_at = now()",
        subject_id,
        _json(dict(values)),
        list(removed),
    )


async def merge(conn: Connection, survivor: str, merged: str) -> None:
    """Fold ``merged`` into ``survivor``: its events, its ids; its own row goes (the
    survivor's traits come from the PROFILE stream, which announces the merged profile)."""
    await conn.execute(
        "UPDATE subject_events SET subject_id = $2 WHERE subject_id = $1", merged, survivor
    )
    await conn.execute(
        "UPDATE identities SET profile_id = $2 WHERE profile_id = $1", merged, survivor
    )
    await conn.execute(
        "INSERT INTO identities (subject_id, profile_id) VALUES ($1, $2) "
        "ON CONFLICT (subject_id) DO UPDATE SET profile_id = excluded.profile_id",
        merged,
        survivor,
    )
    await conn.execute(
        "INSERT INTO subjects (subject_id, last_seen) SELECT $2, last_seen FROM subjects "
        "WHERE subject_id = $1 ON CONFLICT (subject_id) DO UPDATE SET "
        "last_seen = GREATEST(subjects.last_seen, excluded.last_seen)",
        merged,
        survivor,
    )
    await conn.execute("DELETE FROM subjects WHERE subject_id = $1", merged)
    await conn.execute("DELETE FROM evaluations_due WHERE subject_id = $1", merged)


async def subject_page(conn: Connection, after: str | None, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT subject_id FROM subjects WHERE ($1::text IS NULL OR subject_id > $1) "
        "ORDER BY subject_id LIMIT $2",
        after,
        limit,
    )
    return [row["subject_id"] for row in rows]


async def traits_page(
    conn: Connection, after: str | None, limit: int
) -> list[tuple[str, dict[str, Any], datetime | None]]:
    """(subject id, traits, last seen) of subjects after ``after``, by id."""
    rows = await conn.fetch(
        "SELECT subject_id, traits, last_seen FROM subjects "
        "WHERE ($1::text IS NULL OR subject_id > $1) ORDER BY subject_id LIMIT $2",
        after,
        limit,
    )
    return [(r["subject_id"], orjson.loads(r["traits"]), r["last_seen"]) for r in rows]


async def set_due(conn: Connection, due: Sequence[tuple[str, str, datetime | None]]) -> None:
    """(segment, subject, when) rows for the clock; None clears the entry."""
    clear = [(g, s) for g, s, at in due if at is None]
    keep = [(g, s, at) for g, s, at in due if at is not None]
    if clear:
        await conn.execute(
            "DELETE FROM evaluations_due d USING unnest($1::text[], $2::text[]) AS t(g, s) "
            "WHERE d.segment_id = t.g AND d.subject_id = t.s",
            [g for g, _ in clear],
            [s for _, s in clear],
        )
    if keep:
        await conn.executemany(
            "INSERT INTO evaluations_due (segment_id, subject_id, due_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (segment_id, subject_id) DO UPDATE SET due_at = excluded.due_at",
            keep,
        )


async def take_due(conn: Connection, now: datetime, limit: int) -> list[tuple[str, str, datetime]]:
    """Due (segment, subject, due_at) entries, locked so that another replica skips them."""
    rows = await conn.fetch(
        "SELECT segment_id, subject_id, due_at FROM evaluations_due WHERE due_at <= $1 "
        "ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [(r["segment_id"], r["subject_id"], r["due_at"]) for r in rows]


async def prune_events(conn: Connection, before: datetime) -> int:
    deleted = await conn.fetchval(
        "WITH gone AS (DELETE FROM subject_events WHERE at < $1 RETURNING 1) "
        "SELECT count(*) FROM gone",
        before,
    )
    return int(deleted)


async def population(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM subjects"))
