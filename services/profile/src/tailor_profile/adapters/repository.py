"""SQL over the profile schema. Projection tables are named through :class:`Tables`, so the
same statements fill the live tables and a rebuild's fresh ``rebuild_*`` copies."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from tailor_core.db import Connection
from tailor_profile.domain.state import State, TraitWrite, parse_iso

PROJECTION_TABLES = ("profiles", "identities", "merges", "trait_history", "applied_events")


@dataclass(frozen=True, slots=True)
class Tables:
    """Names of the projection tables: ``prefix`` is "" (live) or "rebuild_"."""

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix not in ("", "rebuild_"):
            raise ValueError("unexpected table prefix")

    @property
    def profiles(self) -> str:
        return f"{self.prefix}profiles"

    @property
    def identities(self) -> str:
        return f"{self.prefix}identities"

    @property
    def merges(self) -> str:
        return f"{self.prefix}merges"

    @property
    def history(self) -> str:
        return f"{self.prefix}trait_history"

    @property
    def applied(self) -> str:
        return f"{self.prefix}applied_events"


LIVE = Tables()
REBUILD = Tables("rebuild_")


@dataclass(slots=True)
class StoredProfile:
    profile_id: str
    version: int
    state: State
    search: dict[str, Any]
    rfm: dict[str, Any] | None
    imputed: dict[str, Any] | None
    stale_traits: list[str]
    exists: bool = True


def _profile(row: Any) -> StoredProfile:
    return StoredProfile(
        row["profile_id"],
        row["version"],
        orjson.loads(row["state"]),
        orjson.loads(row["search"]),
        json.loads(row["rfm"]) if row["rfm"] else None,
        json.loads(row["imputed"]) if row["imputed"] else None,
        list(row["stale_traits"]),
    )


_COLUMNS = "profile_id, version, state, search, rfm, imputed, stale_traits"


async def claim_events(conn: Connection, t: Tables, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record ``(event id, subject id)`` pairs as applied; return the ids that were new."""
    rows = await conn.fetch(
        f"INSERT INTO {t.applied} (event_id, subject_id) "
        "SELECT * FROM unnest($1::text[], $2::text[]) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        [e for e, _ in events],
        [s for _, s in events],
    )
    return {row["event_id"] for row in rows}


async def resolve(conn: Connection, t: Tables, subject_ids: Iterable[str]) -> dict[str, str]:
    """Profile id of each known subject id."""
    ids = list(set(subject_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        f"SELECT subject_id, profile_id FROM {t.identities} WHERE subject_id = ANY($1::text[])",
        ids,
    )
    return {row["subject_id"]: row["profile_id"] for row in rows}


async def link(conn: Connection, t: Tables, pairs: dict[str, str]) -> None:
    """Point subject ids at profiles (new ids and ids whose profile was merged away)."""
    if not pairs:
        return
    await conn.execute(
        f"INSERT INTO {t.identities} (subject_id, profile_id) "
        "SELECT * FROM unnest($1::text[], $2::text[]) "
        "ON CONFLICT (subject_id) DO UPDATE SET profile_id = excluded.profile_id",
        list(pairs),
        list(pairs.values()),
    )


async def repoint(conn: Connection, t: Tables, merged: str, survivor: str) -> None:
    """Every id of ``merged`` now resolves to ``survivor``; its history moves along."""
    await conn.execute(
        f"UPDATE {t.identities} SET profile_id = $2 WHERE profile_id = $1", merged, survivor
    )
    await conn.execute(
        f"UPDATE {t.history} SET profile_id = $2 WHERE profile_id = $1", merged, survivor
    )


async def lock_profiles(
    conn: Connection, t: Tables, profile_ids: Iterable[str]
) -> dict[str, StoredProfile]:
    """Load and row-lock profiles, in id order so that concurrent batches cannot deadlock."""
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {t.profiles} WHERE profile_id = ANY($1::text[]) "
        "ORDER BY profile_id FOR UPDATE",
        ids,
    )
    return {row["profile_id"]: _profile(row) for row in rows}


async def get_profiles(
    conn: Connection, profile_ids: Sequence[str], t: Tables = LIVE
) -> dict[str, StoredProfile]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {t.profiles} WHERE profile_id = ANY($1::text[])",
        list(profile_ids),
    )
    return {row["profile_id"]: _profile(row) for row in rows}


async def save_profiles(
    conn: Connection,
    t: Tables,
    profiles: Sequence[StoredProfile],
    window_changes: dict[str, datetime | None],
) -> None:
    await conn.executemany(
        f"INSERT INTO {t.profiles} AS p (profile_id, version, state, search, first_seen, "
        "last_seen, windows_change_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now()) "
        "ON CONFLICT (profile_id) DO UPDATE SET version = excluded.version, "
        "state = excluded.state, search = excluded.search, first_seen = excluded.first_seen, "
        "last_seen = excluded.last_seen, windows_change_at = excluded.windows_change_at, "
        "updated_at = now()",
        [
            (
                p.profile_id,
                p.version,
                orjson.dumps(p.state, option=orjson.OPT_NON_STR_KEYS).decode(),
                orjson.dumps(p.search, option=orjson.OPT_NON_STR_KEYS).decode(),
                parse_iso(p.state["first_seen"]) if p.state["first_seen"] else None,
                parse_iso(p.state["last_seen"]) if p.state["last_seen"] else None,
                window_changes.get(p.profile_id),
            )
            for p in profiles
        ],
    )


async def delete_profile(conn: Connection, t: Tables, profile_id: str) -> None:
    await conn.execute(f"DELETE FROM {t.profiles} WHERE profile_id = $1", profile_id)


async def record_merge(
    conn: Connection,
    t: Tables,
    *,
    survivor: str,
    merged: str,
    reason: str,
    cause_event_id: str,
    merged_at: datetime,
    merged_by: str = "",
    note: str = "",
) -> None:
    await conn.execute(
        f"INSERT INTO {t.merges} (surviving_profile_id, merged_profile_id, reason, "
        "cause_event_id, merged_at, merged_by, note) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        survivor,
        merged,
        reason,
        cause_event_id,
        merged_at,
        merged_by,
        note,
    )


async def add_history(conn: Connection, t: Tables, rows: Sequence[tuple[str, TraitWrite]]) -> None:
    """One history row per offered value (``(profile_id, write)``)."""
    if not rows:
        return
    await conn.executemany(
        f"INSERT INTO {t.history} (profile_id, trait, value, sealed, key_subject, source, "
        "set_at, lost, source_id, cause_event_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        [
            (
                pid,
                w.name,
                None if w.entry["v"] is None else json.dumps(w.entry["v"]),
                w.entry["s"],
                w.entry["k"],
                w.entry["src"],
                parse_iso(w.entry["at"]),
                not w.won,
                w.entry["sid"] or "",
                w.entry["ev"],
            )
            for pid, w in rows
        ],
    )


async def mark_lost(
    conn: Connection, t: Tables, profile_id: str, losers: Sequence[TraitWrite]
) -> None:
    """Values of a merged profile that lost to the survivor's are flagged as lost."""
    if not losers:
        return
    await conn.execute(
        f"UPDATE {t.history} SET lost = true WHERE profile_id = $1 AND (trait, cause_event_id) "
        "IN (SELECT * FROM unnest($2::text[], $3::text[]))",
        profile_id,
        [w.name for w in losers],
        [w.entry["ev"] for w in losers],
    )


async def identities_of(conn: Connection, profile_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT subject_id FROM identities WHERE profile_id = $1 ORDER BY subject_id", profile_id
    )
    return [row["subject_id"] for row in rows]


async def identities_of_many(conn: Connection, profile_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT profile_id, subject_id FROM identities WHERE profile_id = ANY($1::text[]) "
        "ORDER BY subject_id",
        list(profile_ids),
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["profile_id"], []).append(row["subject_id"])
    return found


async def merges_of(conn: Connection, ids: Sequence[str]) -> list[Any]:
    return list(
        await conn.fetch(
            "SELECT * FROM merges WHERE surviving_profile_id = ANY($1::text[]) "
            "OR merged_profile_id = ANY($1::text[]) ORDER BY merged_at, merge_id",
            list(ids),
        )
    )


async def history(
    conn: Connection, profile_id: str, trait: str, after: tuple[datetime, int] | None, limit: int
) -> list[Any]:
    query = (
        "SELECT * FROM trait_history WHERE profile_id = $1 AND trait = $2 "
        + ("AND (set_at, entry_id) < ($4, $5) " if after else "")
        + "ORDER BY set_at DESC, entry_id DESC LIMIT $3"
    )
    args: list[Any] = [profile_id, trait, limit]
    if after:
        args += list(after)
    return list(await conn.fetch(query, *args))
