"""The recommend service's part in data-subject requests: the subject's interactions, its
segment memberships and merged ids. Model artifacts hold item factors only, so no user
factor is left behind; every replica rebuilds its real-time models without the subject."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tailor_core.db import Connection
from tailor_core.privacy import PrivacyHandlers, remember_erased
from tailor_recommend.adapters import store


async def _ids(conn: Connection, subject_ids: Sequence[str]) -> list[str]:
    resolved = await store.resolve(conn, subject_ids)
    ids = set(subject_ids) | set(resolved.values())
    merged = await conn.fetch(
        "SELECT subject_id FROM identities WHERE profile_id = ANY($1::text[])", sorted(ids)
    )
    return sorted(ids | {row["subject_id"] for row in merged})


async def export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
    ids = await _ids(conn, subject_ids)
    interactions = await conn.fetch(
        "SELECT subject_id, item_id, kind, at, country, device FROM interactions "
        "WHERE subject_id = ANY($1::text[]) ORDER BY position",
        ids,
    )
    members = await conn.fetch(
        "SELECT segment_id, subject_id FROM segment_members WHERE subject_id = ANY($1::text[])",
        ids,
    )
    return {
        "interactions": [dict(r) for r in interactions],
        "segment_memberships": [dict(r) for r in members],
        "user_factors": "none stored: recommendations fold the history in at request time",
    }


async def erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
    ids = await _ids(conn, subject_ids)
    await remember_erased(conn, ids)
    counts = {}
    inbox = await conn.fetchval(
        "WITH gone AS (DELETE FROM inbox WHERE event_id IN "
        "(SELECT event_id FROM interactions WHERE subject_id = ANY($1::text[])) "
        "OR EXISTS (SELECT 1 FROM unnest($1::text[]) AS i WHERE position(i IN event_id) > 0) "
        "RETURNING 1) SELECT count(*) FROM gone",
        ids,
    )
    counts["inbox"] = int(inbox)
    for table, condition in (
        ("interactions", "subject_id = ANY($1::text[])"),
        ("segment_members", "subject_id = ANY($1::text[])"),
        ("identities", "subject_id = ANY($1::text[]) OR profile_id = ANY($1::text[])"),
    ):
        deleted = await conn.fetchval(
            f"WITH gone AS (DELETE FROM {table} WHERE {condition} RETURNING 1) "
            "SELECT count(*) FROM gone",
            ids,
        )
        counts[table] = int(deleted)
    await store.bump_epoch(conn)
    return counts


def handlers() -> PrivacyHandlers:
    return PrivacyHandlers("recommend", export, erase)
