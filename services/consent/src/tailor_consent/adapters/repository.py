"""SQL for the consent ledger and purpose registry (the consent schema only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from tailor_consent.domain.ledger import (
    DEFAULT_PURPOSES,
    Decision,
    DecisionKind,
    DecisionMetadata,
    Jurisdiction,
    Purpose,
    Source,
)
from tailor_core.db import Connection


def _purpose(row: asyncpg.Record) -> Purpose:
    return Purpose(
        row["name"],
        row["description"],
        row["built_in"],
        row["always_allowed"],
        tuple(row["allowed_services"]),
    )


def _decision(row: asyncpg.Record) -> Decision:
    return Decision(
        decision_id=str(row["decision_id"]),
        subject_id=row["subject_id"],
        purpose=row["purpose"],
        kind=DecisionKind(row["kind"]),
        metadata=DecisionMetadata(
            Source(row["source"]),
            Jurisdiction(row["jurisdiction"]),
            row["policy_version"],
            row["proof_reference"],
        ),
        decided_at=row["decided_at"],
        recorded_at=row["recorded_at"],
        expires_at=row["expires_at"],
        inherited_from=row["inherited_from"],
    )


async def ensure_default_purposes(conn: Connection) -> None:
    await conn.executemany(
        "INSERT INTO purposes (name, description, built_in, always_allowed, allowed_services)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        [
            (p.name, p.description, p.built_in, p.always_allowed, list(p.allowed_services))
            for p in DEFAULT_PURPOSES
        ],
    )


async def load_purposes(conn: Connection) -> dict[str, Purpose]:
    rows = await conn.fetch("SELECT * FROM purposes ORDER BY built_in DESC, name")
    return {row["name"]: _purpose(row) for row in rows}


async def upsert_purpose(conn: Connection, purpose: Purpose) -> Purpose:
    row = await conn.fetchrow(
        """
        INSERT INTO purposes (name, description, built_in, always_allowed, allowed_services)
        VALUES ($1, $2, false, false, $3)
        ON CONFLICT (name) DO UPDATE
           SET description = EXCLUDED.description, allowed_services = EXCLUDED.allowed_services,
               updated_at = now()
        RETURNING *
        """,
        purpose.name,
        purpose.description,
        list(purpose.allowed_services),
    )
    assert row is not None
    return _purpose(row)


async def append_decisions(conn: Connection, decisions: Sequence[Decision]) -> list[Decision]:
    """Append decisions; returns them as stored (with the server's recorded_at)."""
    stored = []
    for d in decisions:
        row = await conn.fetchrow(
            """
            INSERT INTO decisions (decision_id, subject_id, purpose, kind, source, jurisdiction,
                                   policy_version, proof_reference, decided_at, expires_at,
                                   inherited_from)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *
            """,
            d.decision_id,
            d.subject_id,
            d.purpose,
            d.kind.value,
            d.metadata.source.value,
            d.metadata.jurisdiction.value,
            d.metadata.policy_version,
            d.metadata.proof_reference,
            d.decided_at,
            d.expires_at,
            d.inherited_from,
        )
        assert row is not None
        stored.append(_decision(row))
    return stored


async def decisions_of(
    conn: Connection,
    subject_id: str,
    *,
    purpose: str = "",
    after_position: int = 0,
    limit: int | None = None,
) -> list[tuple[int, Decision]]:
    """A subject's decisions in recording order, with their ledger positions."""
    rows = await conn.fetch(
        "SELECT * FROM decisions WHERE subject_id = $1 AND ($2 = '' OR purpose = $2)"
        " AND position > $3 ORDER BY position LIMIT $4",
        subject_id,
        purpose,
        after_position,
        limit,
    )
    return [(row["position"], _decision(row)) for row in rows]


async def latest_decision(
    conn: Connection, subject_id: str, purpose: str
) -> tuple[Decision | None, Jurisdiction | None]:
    """The decision in force for one purpose and the subject's jurisdiction, in one query."""
    row = await conn.fetchrow(
        """
        SELECT d.*, s.jurisdiction AS subject_jurisdiction
          FROM (SELECT 1) AS one
          LEFT JOIN LATERAL (
                SELECT * FROM decisions
                 WHERE subject_id = $1 AND purpose = $2
                 ORDER BY decided_at DESC, position DESC LIMIT 1) AS d ON true
          LEFT JOIN subjects AS s ON s.subject_id = $1
        """,
        subject_id,
        purpose,
    )
    assert row is not None
    decision = _decision(row) if row["decision_id"] is not None else None
    jurisdiction = row["subject_jurisdiction"]
    return decision, Jurisdiction(jurisdiction) if jurisdiction else None


async def decisions_of_many(
    conn: Connection, subject_ids: Sequence[str]
) -> dict[str, list[Decision]]:
    rows = await conn.fetch(
        "SELECT * FROM decisions WHERE subject_id = ANY($1::text[]) ORDER BY position",
        list(subject_ids),
    )
    found: dict[str, list[Decision]] = {}
    for row in rows:
        found.setdefault(row["subject_id"], []).append(_decision(row))
    return found


async def jurisdictions_of(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Jurisdiction]:
    rows = await conn.fetch(
        "SELECT subject_id, jurisdiction FROM subjects WHERE subject_id = ANY($1::text[])",
        list(subject_ids),
    )
    return {row["subject_id"]: Jurisdiction(row["jurisdiction"]) for row in rows}


async def set_jurisdiction(conn: Connection, subject_id: str, jurisdiction: Jurisdiction) -> None:
    await conn.execute(
        "INSERT INTO subjects (subject_id, jurisdiction) VALUES ($1, $2) ON CONFLICT (subject_id)"
        " DO UPDATE SET jurisdiction = EXCLUDED.jurisdiction, updated_at = now()",
        subject_id,
        jurisdiction.value,
    )


async def report(
    conn: Connection, start: datetime, end: datetime, bucket: str, purposes: Sequence[str]
) -> list[dict[str, Any]]:
    """Decision counts per bucket and purpose, by the time they were recorded."""
    rows = await conn.fetch(
        """
        SELECT date_trunc($3, recorded_at) AS bucket_start, purpose,
               count(*) FILTER (WHERE kind = 'granted') AS grants,
               count(*) FILTER (WHERE kind = 'denied') AS denials,
               count(*) FILTER (WHERE kind = 'withdrawn') AS withdrawals
          FROM decisions
         WHERE recorded_at >= $1 AND recorded_at < $2
           AND (cardinality($4::text[]) = 0 OR purpose = ANY($4))
         GROUP BY 1, 2 ORDER BY 1, 2
        """,
        start,
        end,
        bucket,
        list(purposes),
    )
    return [dict(row) for row in rows]
