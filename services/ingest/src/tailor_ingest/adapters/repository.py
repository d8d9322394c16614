"""All of ingest's SQL: API keys, tracking plans, accepted message ids, rejections, counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tailor_core.db import Connection
from tailor_ingest.domain.api_keys import ApiKey

# --- API keys ---------------------------------------------------------------------------

_KEY_COLUMNS = (
    "key_id, source_id, secret_sha256, scopes, rate_limit_per_second, burst, label, "
    "created_by, created_at, expires_at, revoked_at, last_used_at"
)


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        source_id=row["source_id"],
        scopes=tuple(row["scopes"]),
        rate_limit_per_second=row["rate_limit_per_second"],
        burst=row["burst"],
        label=row["label"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        secret_sha256=bytes(row["secret_sha256"]),
    )


async def insert_key(conn: Connection, key: ApiKey) -> ApiKey:
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (key_id, source_id, secret_sha256, scopes, rate_limit_per_second, "
        f"burst, label, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        f"RETURNING {_KEY_COLUMNS}",
        key.key_id,
        key.source_id,
        key.secret_sha256,
        list(key.scopes),
        key.rate_limit_per_second,
        key.burst,
        key.label,
        key.created_by,
        key.expires_at,
    )
    assert row is not None
    return _key(row)


async def get_key(conn: Connection, key_id: str) -> ApiKey | None:
    row = await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
    return _key(row) if row else None


async def list_keys(
    conn: Connection,
    *,
    source_id: str,
    include_revoked: bool,
    now: datetime,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[ApiKey]:
    """Keys newest first, after the ``before`` cursor (created_at, key_id)."""
    rows = await conn.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys "
        "WHERE ($1 = '' OR source_id = $1) "
        "AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3))) "
        "AND ($4::timestamptz IS NULL OR (created_at, key_id) < ($4, $5)) "
        "ORDER BY created_at DESC, key_id DESC LIMIT $6",
        source_id,
        include_revoked,
        now,
        before[0] if before else None,
        before[1] if before else "",
        limit,
    )
    return [_key(row) for row in rows]


async def update_key(conn: Connection, key_id: str, changes: dict[str, Any]) -> ApiKey | None:
    """Set the given columns (names from a fixed list, never from the caller)."""
    allowed = {"label", "scopes", "rate_limit_per_second", "burst", "expires_at"}
    if not changes:
        return await get_key(conn, key_id)
    assert set(changes) <= allowed
    names = sorted(changes)
    assignments = ", ".join(f"{name} = ${index + 2}" for index, name in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE api_keys SET {assignments} WHERE key_id = $1 RETURNING {_KEY_COLUMNS}",
        key_id,
        *(list(changes[n]) if n == "scopes" else changes[n] for n in names),
    )
    return _key(row) if row else None


async def revoke_key(conn: Connection, key_id: str, now: datetime) -> ApiKey | None:
    row = await conn.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE key_id = $1 "
        f"RETURNING {_KEY_COLUMNS}",
        key_id,
        now,
    )
    return _key(row) if row else None


async def touch_key(conn: Connection, key_id: str, now: datetime) -> None:
    await conn.execute("UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1", key_id, now)


# --- Tracking plans ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPlan:
    source_id: str
    version: int
    plan: bytes  # serialized tailor.ingest.v1.TrackingPlan
    updated_at: datetime
    updated_by: str
    deleted: bool


def _plan(row: asyncpg.Record) -> StoredPlan:
    return StoredPlan(
        row["source_id"],
        row["version"],
        bytes(row["plan"]),
        row["updated_at"],
        row["updated_by"],
        row["deleted_at"] is not None,
    )


_PLAN_COLUMNS = "source_id, version, plan, updated_at, updated_by, deleted_at"


async def lock_source_plans(conn: Connection, source_id: str) -> None:
    """Serialize plan writes of one source until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tailor.ingest.plan.' || $1, 0))",
        source_id,
    )


async def latest_plan(conn: Connection, source_id: str) -> StoredPlan | None:
    """The newest version of a source's plan, deleted or not."""
    row = await conn.fetchrow(
        f"SELECT {_PLAN_COLUMNS} FROM tracking_plans WHERE source_id = $1 "
        "ORDER BY version DESC LIMIT 1",
        source_id,
    )
    return _plan(row) if row else None


async def plan_version(conn: Connection, source_id: str, version: int) -> StoredPlan | None:
    row = await conn.fetchrow(
        f"SELECT {_PLAN_COLUMNS} FROM tracking_plans WHERE source_id = $1 AND version = $2",
        source_id,
        version,
    )
    return _plan(row) if row else None


async def insert_plan(
    conn: Connection, source_id: str, version: int, plan: bytes, updated_by: str, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO tracking_plans (source_id, version, plan, updated_at, updated_by) "
        "VALUES ($1, $2, $3, $4, $5)",
        source_id,
        version,
        plan,
        now,
        updated_by,
    )


async def mark_plan_deleted(conn: Connection, source_id: str, version: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE tracking_plans SET deleted_at = $3 WHERE source_id = $1 AND version = $2",
        source_id,
        version,
        now,
    )


async def current_plans(conn: Connection, after_source: str, limit: int) -> list[StoredPlan]:
    """Current (not deleted) plans by source id, after the cursor."""
    rows = await conn.fetch(
        f"SELECT {_PLAN_COLUMNS} FROM ("
        f"  SELECT DISTINCT ON (source_id) {_PLAN_COLUMNS} FROM tracking_plans"
        "   WHERE source_id > $1 ORDER BY source_id, version DESC"
        ") latest WHERE deleted_at IS NULL ORDER BY source_id LIMIT $2",
        after_source,
        limit,
    )
    return [_plan(row) for row in rows]


# --- Accepted message ids ---------------------------------------------------------------


async def claim_message_ids(
    conn: Connection, source_id: str, message_ids: Sequence[str], subject_tokens: Sequence[str]
) -> set[str]:
    """Record message ids as accepted; return those that were new (the rest are duplicates).

    A concurrent transaction claiming the same id waits on the unique index until this one
    ends, so two simultaneous resends never both count as new.
    """
    if not message_ids:
        return set()
    rows = await conn.fetch(
        "INSERT INTO received_events (source_id, message_id, subject_token) "
        "SELECT $1, message_id, subject_token "
        "FROM unnest($2::text[], $3::text[]) AS claimed (message_id, subject_token) "
        "ON CONFLICT DO NOTHING RETURNING message_id",
        source_id,
        list(message_ids),
        list(subject_tokens),
    )
    return {row["message_id"] for row in rows}


async def forget_old_message_ids(conn: Connection, older_than: datetime, limit: int) -> int:
    result: str = await conn.execute(
        "DELETE FROM received_events WHERE ctid = ANY(ARRAY("
        "  SELECT ctid FROM received_events WHERE received_at < $1 LIMIT $2))",
        older_than,
        limit,
    )
    return int(result.split()[-1])


# --- Rejections -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectionRow:
    rejection_id: str
    source_id: str
    message_id: str
    event_name: str
    reasons: list[int]
    subject_token: str
    rejection: bytes  # serialized tailor.events.v1.EventRejected
    rejected_at: datetime


async def insert_rejections(conn: Connection, rows: Sequence[RejectionRow]) -> set[str]:
    """Store rejections; return the ids that were new (a resent bad event is stored once)."""
    if not rows:
        return set()
    inserted = await conn.fetch(
        "INSERT INTO rejected_events (rejection_id, source_id, message_id, event_name, reasons, "
        "subject_token, rejection, rejected_at) "
        "SELECT r.rejection_id, r.source_id, r.message_id, r.event_name, "
        "  (SELECT array_agg(x::int) FROM jsonb_array_elements_text(r.reasons) x), "
        "  r.subject_token, r.rejection, r.rejected_at "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], "
        "  $7::bytea[], $8::timestamptz[]) "
        "  AS r (rejection_id, source_id, message_id, event_name, reasons, subject_token, "
        "  rejection, rejected_at) "
        "ON CONFLICT DO NOTHING RETURNING rejection_id",
        [r.rejection_id for r in rows],
        [r.source_id for r in rows],
        [r.message_id for r in rows],
        [r.event_name for r in rows],
        [str(r.reasons) for r in rows],
        [r.subject_token for r in rows],
        [r.rejection for r in rows],
        [r.rejected_at for r in rows],
    )
    return {row["rejection_id"] for row in inserted}


def _rejection(row: asyncpg.Record) -> RejectionRow:
    return RejectionRow(
        row["rejection_id"],
        row["source_id"],
        row["message_id"],
        row["event_name"],
        list(row["reasons"]),
        row["subject_token"],
        bytes(row["rejection"]),
        row["rejected_at"],
    )


async def list_rejections(
    conn: Connection,
    *,
    source_id: str,
    reason: int,
    event_name: str,
    start: datetime | None,
    end: datetime | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[RejectionRow]:
    rows = await conn.fetch(
        "SELECT * FROM rejected_events "
        "WHERE ($1 = '' OR source_id = $1) AND ($2 = 0 OR reasons @> ARRAY[$2::int]) "
        "AND ($3 = '' OR event_name = $3) "
        "AND ($4::timestamptz IS NULL OR rejected_at >= $4) "
        "AND ($5::timestamptz IS NULL OR rejected_at < $5) "
        "AND ($6::timestamptz IS NULL OR (rejected_at, rejection_id) < ($6, $7)) "
        "ORDER BY rejected_at DESC, rejection_id DESC LIMIT $8",
        source_id,
        reason,
        event_name,
        start,
        end,
        before[0] if before else None,
        before[1] if before else "",
        limit,
    )
    return [_rejection(row) for row in rows]


async def get_rejection(conn: Connection, rejection_id: str) -> RejectionRow | None:
    row = await conn.fetchrow("SELECT * FROM rejected_events WHERE rejection_id = $1", rejection_id)
    return _rejection(row) if row else None


# --- Quality counts ---------------------------------------------------------------------

#: (source_id, bucket_start, metric, reason, purpose) -> count
CountKey = tuple[str, datetime, str, str, str]


async def add_counts(conn: Connection, counts: dict[CountKey, int]) -> None:
    if not counts:
        return
    keys = sorted(counts)  # a fixed order: two flushes never lock rows in opposite orders
    await conn.execute(
        "INSERT INTO quality_counts (source_id, bucket_start, metric, reason, purpose, count) "
        "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], "
        "  $5::text[], $6::bigint[]) "
        "ON CONFLICT (source_id, bucket_start, metric, reason, purpose) "
        "DO UPDATE SET count = quality_counts.count + EXCLUDED.count",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [k[4] for k in keys],
        [counts[k] for k in keys],
    )


async def query_counts(
    conn: Connection,
    *,
    source_id: str,
    start: datetime,
    end: datetime,
    bucket: timedelta | None,
) -> list[asyncpg.Record]:
    """Counts summed per source, bucket (None: one bucket from ``start``), metric, reason."""
    return await conn.fetch(
        "SELECT source_id, "
        "  CASE WHEN $4::interval IS NULL THEN $2 ELSE date_bin($4, bucket_start, $2) END "
        "    AS bucket, metric, reason, purpose, sum(count)::bigint AS count "
        "FROM quality_counts "
        "WHERE ($1 = '' OR source_id = $1) AND bucket_start >= $2 AND bucket_start < $3 "
        "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        source_id,
        start,
        end,
        bucket,
    )


# --- Data-subject requests --------------------------------------------------------------


async def erase_subjects(conn: Connection, tokens: Iterable[str]) -> dict[str, int]:
    wanted = list(tokens)
    rejected = await conn.execute(
        "DELETE FROM rejected_events WHERE subject_token = ANY($1::text[])", wanted
    )
    received = await conn.execute(
        "DELETE FROM received_events WHERE subject_token = ANY($1::text[])", wanted
    )
    return {
        "rejected_events": int(rejected.split()[-1]),
        "received_events": int(received.split()[-1]),
    }


async def subject_rows(conn: Connection, tokens: Iterable[str]) -> dict[str, Any]:
    wanted = list(tokens)
    rejections = await conn.fetch(
        "SELECT * FROM rejected_events WHERE subject_token = ANY($1::text[]) ORDER BY rejected_at",
        wanted,
    )
    received = await conn.fetch(
        "SELECT source_id, message_id, received_at FROM received_events "
        "WHERE subject_token = ANY($1::text[]) ORDER BY received_at",
        wanted,
    )
    return {
        "rejections": [_rejection(row) for row in rejections],
        "received": [dict(row) for row in received],
    }
