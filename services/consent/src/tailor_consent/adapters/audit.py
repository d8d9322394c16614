"""The audit log: an append-only hash chain in the consent schema.

Each entry's hash is SHA-256 over the previous entry's hash and this entry's canonical
content. Editing, deleting or reordering any row breaks every hash after it, which
:func:`verify` finds. Appends are serialized by an advisory lock, so the chain has no forks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tailor_core.db import Connection
from tailor_core.streams import subject_token

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    sequence: int
    at: datetime
    action: str
    actor: str
    subject_token: str = ""  # one-way token of the subject id, never the id itself
    purpose: str = ""
    request_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    hash: str = ""


def entry_hash(previous_hash: str, entry: AuditEntry) -> str:
    content = json.dumps(
        {
            "sequence": entry.sequence,
            "at": entry.at.astimezone(UTC).isoformat(),
            "action": entry.action,
            "actor": entry.actor,
            "subject_token": entry.subject_token,
            "purpose": entry.purpose,
            "request_id": entry.request_id,
            "details": entry.details,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(f"{previous_hash}|{content}".encode()).hexdigest()


async def append(
    conn: Connection,
    action: str,
    actor: str,
    *,
    subject_id: str = "",
    purpose: str = "",
    request_id: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's transaction."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tailor.audit.' || current_schema()))"
    )
    last = await conn.fetchrow(
        "SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1"
    )
    sequence, previous = (last["sequence"] + 1, last["hash"]) if last else (1, GENESIS)
    # Microsecond precision, as Postgres stores it, so the hash recomputes exactly.
    entry = AuditEntry(
        sequence,
        datetime.now(UTC),
        action,
        actor,
        subject_token(subject_id) if subject_id else "",
        purpose,
        request_id,
        dict(details or {}),
    )
    hashed = AuditEntry(**{**_fields(entry), "hash": entry_hash(previous, entry)})
    await conn.execute(
        "INSERT INTO audit_log (sequence, at, action, actor, subject_token, purpose, request_id,"
        " details, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)",
        hashed.sequence,
        hashed.at,
        hashed.action,
        hashed.actor,
        hashed.subject_token,
        hashed.purpose,
        hashed.request_id,
        json.dumps(hashed.details, sort_keys=True),
        hashed.hash,
    )
    return hashed


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in AuditEntry.__slots__}


def _from_row(row: asyncpg.Record) -> AuditEntry:
    details = row["details"]
    return AuditEntry(
        sequence=row["sequence"],
        at=row["at"],
        action=row["action"],
        actor=row["actor"],
        subject_token=row["subject_token"],
        purpose=row["purpose"],
        request_id=row["request_id"],
        details=json.loads(details) if isinstance(details, str) else details,
        hash=row["hash"],
    )


async def query(
    conn: Connection,
    *,
    subject_id: str = "",
    actor: str = "",
    purpose: str = "",
    actions: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    before_sequence: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries matching every given filter, newest first."""
    rows = await conn.fetch(
        """
        SELECT * FROM audit_log
        WHERE ($1 = '' OR subject_token = $1) AND ($2 = '' OR actor = $2)
          AND ($3 = '' OR purpose = $3) AND (cardinality($4::text[]) = 0 OR action = ANY($4))
          AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
          AND ($7::bigint IS NULL OR sequence < $7)
        ORDER BY sequence DESC LIMIT $8
        """,
        subject_token(subject_id) if subject_id else "",
        actor,
        purpose,
        list(actions),
        start,
        end,
        before_sequence,
        limit,
    )
    return [_from_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class Verification:
    intact: bool
    checked: int
    first_broken_sequence: int = 0
    problem: str = ""


async def verify(conn: Connection, from_sequence: int = 0, to_sequence: int = 0) -> Verification:
    """Recompute the chain over a range; report the first missing or altered entry."""
    start = max(from_sequence, 1)
    previous = GENESIS
    if start > 1:
        previous_row = await conn.fetchrow(
            "SELECT hash FROM audit_log WHERE sequence = $1", start - 1
        )
        if previous_row is None:
            return Verification(False, 0, start - 1, "missing_entry")
        previous = previous_row["hash"]
    expected = start
    checked = 0
    async with conn.transaction():
        cursor = conn.cursor(
            "SELECT * FROM audit_log WHERE sequence >= $1 AND ($2::bigint = 0 OR sequence <= $2)"
            " ORDER BY sequence",
            start,
            to_sequence,
        )
        async for row in cursor:
            entry = _from_row(row)
            if entry.sequence != expected:
                return Verification(False, checked, expected, "missing_entry")
            if entry_hash(previous, entry) != entry.hash:
                return Verification(False, checked, entry.sequence, "hash_mismatch")
            previous, expected, checked = entry.hash, expected + 1, checked + 1
    return Verification(True, checked)
