"""The segment service's part in data-subject requests: what it holds about a person (trait
values, event facts, memberships, ids merged into them) and its erasure. Membership changes
on the SEGMENT stream carry the subject's token, so the consent service purges them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from tailor_core.db import Connection
from tailor_core.privacy import PrivacyHandlers, remember_erased
from tailor_segment.adapters import facts


async def _profiles(conn: Connection, subject_ids: Sequence[str]) -> list[str]:
    """The subjects and the profiles they were merged into."""
    resolved = await facts.resolve(conn, subject_ids)
    return sorted(set(subject_ids) | set(resolved.values()))


async def export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
    ids = await _profiles(conn, subject_ids)
    subjects = await conn.fetch(
        "SELECT subject_id, traits, last_seen FROM subjects WHERE subject_id = ANY($1::text[])",
        ids,
    )
    events = await conn.fetch(
        "SELECT event_id, subject_id, name, at, fields FROM subject_events "
        "WHERE subject_id = ANY($1::text[]) ORDER BY subject_id, at",
        ids,
    )
    members = await conn.fetch(
        "SELECT segment_id, subject_id, entered_at, explanation, segment_version "
        "FROM memberships WHERE subject_id = ANY($1::text[]) ORDER BY subject_id, segment_id",
        ids,
    )
    merged = await conn.fetch(
        "SELECT subject_id, profile_id FROM identities "
        "WHERE subject_id = ANY($1::text[]) OR profile_id = ANY($1::text[])",
        ids,
    )
    return {
        "subjects": [
            {
                "subject_id": r["subject_id"],
                "traits": orjson.loads(r["traits"]),
                "last_seen": r["last_seen"],
            }
            for r in subjects
        ],
        "event_facts": [{**dict(r), "fields": orjson.loads(r["fields"])} for r in events],
        "memberships": [dict(r) for r in members],
        "identities": [dict(r) for r in merged],
    }


async def erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
    ids = await _profiles(conn, subject_ids)
    merged = await conn.fetch(
        "SELECT subject_id FROM identities WHERE profile_id = ANY($1::text[])", ids
    )
    ids = sorted(set(ids) | {row["subject_id"] for row in merged})
    await remember_erased(conn, ids)
    # Event ids can name the subject (a client's message id is its own choice): the inbox
    # rows of the subject's events go, and any whose id names one of the subject's ids.
    inbox = await conn.fetchval(
        "WITH gone AS (DELETE FROM inbox WHERE event_id IN "
        "(SELECT event_id FROM subject_events WHERE subject_id = ANY($1::text[])) "
        "OR EXISTS (SELECT 1 FROM unnest($1::text[]) AS i WHERE position(i IN event_id) > 0) "
        "RETURNING 1) SELECT count(*) FROM gone",
        ids,
    )
    counts = {"inbox": int(inbox)}
    for table, condition in (
        ("memberships", "subject_id = ANY($1::text[])"),
        ("evaluations_due", "subject_id = ANY($1::text[])"),
        ("subject_events", "subject_id = ANY($1::text[])"),
        ("subjects", "subject_id = ANY($1::text[])"),
        ("identities", "subject_id = ANY($1::text[]) OR profile_id = ANY($1::text[])"),
    ):
        deleted = await conn.fetchval(
            f"WITH gone AS (DELETE FROM {table} WHERE {condition} RETURNING 1) "
            "SELECT count(*) FROM gone",
            ids,
        )
        counts[table] = int(deleted)
    return counts


def handlers() -> PrivacyHandlers:
    return PrivacyHandlers("segment", export, erase)
