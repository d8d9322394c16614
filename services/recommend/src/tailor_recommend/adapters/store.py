"""SQL over the recommend schema: interactions, the catalogue, segment members, merged ids,
model versions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from tailor_core.db import Connection
from tailor_recommend.domain.interactions import EventKind, Interaction


@dataclass(frozen=True, slots=True)
class Row:
    """A stored interaction with what popularity groups need."""

    position: int
    interaction: Interaction
    country: str
    device: str


async def resolve(conn: Connection, subject_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(subject_ids))
    rows = await conn.fetch(
        "SELECT subject_id, profile_id FROM identities WHERE subject_id = ANY($1::text[])", ids
    )
    found = {row["subject_id"]: row["profile_id"] for row in rows}
    return {i: found.get(i, i) for i in ids}


async def add_interactions(
    conn: Connection, rows: Sequence[tuple[str, str, str, str, datetime, str, str]]
) -> None:
    """(event id, subject, item, kind, at, country, device); a repeat is kept once."""
    await conn.executemany(
        "INSERT INTO interactions (event_id, subject_id, item_id, kind, at, country, device) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id, item_id, kind) DO NOTHING",
        rows,
    )


async def describe_items(conn: Connection, items: Sequence[tuple[str, str, str]]) -> None:
    """(item, category, name): the latest non-empty description wins."""
    await conn.executemany(
        "INSERT INTO items (item_id, category, name) VALUES ($1, $2, $3) "
        "ON CONFLICT (item_id) DO UPDATE SET "
        "category = COALESCE(NULLIF(excluded.category, ''), items.category), "
        "name = COALESCE(NULLIF(excluded.name, ''), items.name)",
        items,
    )


def _row(record: Any) -> Row:
    return Row(
        record["position"],
        Interaction(
            record["subject_id"], record["item_id"], EventKind(record["kind"]), record["at"]
        ),
        record["country"],
        record["device"],
    )


async def interactions_after(conn: Connection, position: int, limit: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT position, subject_id, item_id, kind, at, country, device FROM interactions "
        "WHERE position > $1 ORDER BY position LIMIT $2",
        position,
        limit,
    )
    return [_row(r) for r in rows]


async def history(conn: Connection, subject_id: str, limit: int) -> list[Interaction]:
    """The subject's latest interactions, oldest first."""
    rows = await conn.fetch(
        "SELECT position, subject_id, item_id, kind, at, country, device FROM interactions "
        "WHERE subject_id = $1 ORDER BY position DESC LIMIT $2",
        subject_id,
        limit,
    )
    return [_row(r).interaction for r in reversed(rows)]


async def purchased(conn: Connection, subject_id: str) -> frozenset[str]:
    """Every item the subject bought and did not refund (all of its history, not a window)."""
    rows = await conn.fetch(
        "SELECT item_id FROM interactions WHERE subject_id = $1 "
        "AND kind IN ('purchase', 'refund') GROUP BY item_id "
        "HAVING sum(CASE kind WHEN 'purchase' THEN 1 ELSE -1 END) > 0",
        subject_id,
    )
    return frozenset(r["item_id"] for r in rows)


async def categories(conn: Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT item_id, category FROM items WHERE category <> ''")
    return {r["item_id"]: r["category"] for r in rows}


async def segments_of(conn: Connection, subject_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT segment_id FROM segment_members WHERE subject_id = $1 ORDER BY segment_id",
        subject_id,
    )
    return [r["segment_id"] for r in rows]


async def all_members(conn: Connection) -> dict[str, list[str]]:
    """subject -> segments, for popularity per segment."""
    rows = await conn.fetch("SELECT segment_id, subject_id FROM segment_members")
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["subject_id"], []).append(row["segment_id"])
    return found


async def segment_exists(conn: Connection, segment_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM segment_members WHERE segment_id = $1 LIMIT 1", segment_id
        )
    )


async def epoch(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT epoch FROM realtime_epoch"))


async def bump_epoch(conn: Connection) -> None:
    await conn.execute("UPDATE realtime_epoch SET epoch = epoch + 1")


async def latest_position(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT COALESCE(max(position), 0) FROM interactions"))


async def serving_version(conn: Connection, model: str) -> str | None:
    version: str | None = await conn.fetchval(
        "SELECT version FROM models WHERE model = $1 AND state = 'SERVING'", model
    )
    return version


async def serving_model(conn: Connection, model: str) -> Any:
    return await conn.fetchrow(
        "SELECT version, artifact, trained_at FROM models WHERE model = $1 AND state = 'SERVING'",
        model,
    )


async def model_rows(conn: Connection) -> list[Any]:
    """The newest row of each model and the serving one (for GetModelStatus)."""
    return list(
        await conn.fetch(
            "SELECT DISTINCT ON (model, state = 'SERVING') model, version, state, started_at, "
            "trained_at, users, items, interactions, training_seconds, peak_bytes, metrics, "
            "error FROM models ORDER BY model, state = 'SERVING', started_at DESC"
        )
    )


def metrics_json(metrics: dict[str, float]) -> str:
    return orjson.dumps(metrics).decode()
