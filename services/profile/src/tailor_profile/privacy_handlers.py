"""The profile service's steps of data-subject requests: export and erasure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tailor_core.db import Connection
from tailor_core.privacy import PrivacyHandlers, remember_erased
from tailor_profile.adapters import repository as repo
from tailor_profile.projection import lock_projection
from tailor_profile.reads import ProfileReader

#: Exports are made for the data subject; the key service grants keys for it always.
EXPORT_PURPOSE = "necessary"


async def _profile_ids(conn: Connection, subject_ids: Sequence[str]) -> list[str]:
    resolved = await repo.resolve(conn, repo.LIVE, subject_ids)
    return sorted(set(resolved.values()) | set(subject_ids))


def handlers(reader: ProfileReader, schema: str) -> PrivacyHandlers:
    async def export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
        profile_ids = await _profile_ids(conn, subject_ids)
        stored = await repo.get_profiles(conn, profile_ids)
        profiles = []
        for profile in stored.values():
            record = reader.record(profile, [], personal=True)
            traits = []
            for trait in record.traits:
                value = trait.value
                if trait.personal:
                    entry = profile.state["traits"][trait.name]
                    value = await reader.open_value(entry["s"], entry["k"], EXPORT_PURPOSE)
                traits.append(
                    {
                        "name": trait.name,
                        "value": value,
                        "updated_at": trait.updated_at,
                        "imputed": trait.imputed,
                        "source_id": trait.source_id,
                    }
                )
            profiles.append(
                {
                    "profile_id": profile.profile_id,
                    "identities": await repo.identities_of(conn, profile.profile_id),
                    "first_seen": record.first_seen,
                    "last_seen": record.last_seen,
                    "traits": traits,
                    "computed": record.computed,
                    "merges": [
                        dict(row) for row in await repo.merges_of(conn, [profile.profile_id])
                    ],
                }
            )
        exported: dict[str, Any] = json.loads(json.dumps({"profiles": profiles}, default=str))
        return exported

    async def erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
        await lock_projection(conn, schema, exclusive=True)  # no batch half-way meanwhile
        profile_ids = await _profile_ids(conn, subject_ids)
        ids = sorted(set(profile_ids) | set(subject_ids))
        linked = await repo.identities_of_many(conn, ids)
        ids = sorted(set(ids) | {s for found in linked.values() for s in found})
        await remember_erased(conn, ids)
        counts: dict[str, int] = {}
        for table, column in (
            ("applied_events", "subject_id"),
            ("trait_history", "profile_id"),
            ("merges", "surviving_profile_id"),
            ("merges", "merged_profile_id"),
            ("identities", "profile_id"),
            ("identities", "subject_id"),
            ("profiles", "profile_id"),
        ):
            status = await conn.execute(
                f"DELETE FROM {table} WHERE {column} = ANY($1::text[])", ids
            )
            counts[table] = counts.get(table, 0) + int(status.split()[-1])
        return counts

    return PrivacyHandlers("profile", export, erase)
