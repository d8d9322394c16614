"""The consent service's own step of data-subject requests: its ledger rows and the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tailor_consent.adapters import keys
from tailor_core.db import Connection
from tailor_core.privacy import PrivacyHandlers


async def export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
    decisions = await conn.fetch(
        "SELECT decision_id, subject_id, purpose, kind, source, jurisdiction, policy_version,"
        " proof_reference, decided_at, expires_at, recorded_at FROM decisions"
        " WHERE subject_id = ANY($1::text[]) ORDER BY position",
        list(subject_ids),
    )
    key_rows = await conn.fetch(
        "SELECT subject_id, key_id, created_at, destroyed_at FROM data_keys"
        " WHERE subject_id = ANY($1::text[])",
        list(subject_ids),
    )
    return {
        "consent_decisions": [
            {k: str(v) if v is not None else None for k, v in dict(r).items()} for r in decisions
        ],
        "data_keys": [
            {k: str(v) if v is not None else None for k, v in dict(r).items()} for r in key_rows
        ],
    }


async def erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
    ids = list(subject_ids)
    decisions = await conn.execute("DELETE FROM decisions WHERE subject_id = ANY($1::text[])", ids)
    subjects = await conn.execute("DELETE FROM subjects WHERE subject_id = ANY($1::text[])", ids)
    destroyed = [await keys.destroy(conn, subject_id) for subject_id in ids]
    # The shredded key row keeps no subject id either: only an anonymous tombstone remains.
    await conn.execute("DELETE FROM data_keys WHERE subject_id = ANY($1::text[])", ids)
    return {
        "decisions": int(decisions.split()[-1]),
        "subjects": int(subjects.split()[-1]),
        "data_keys_destroyed": sum(destroyed),
    }


HANDLERS = PrivacyHandlers("consent", export, erase)
