"""Ingest's part in data-subject requests: its rejected events and accepted message ids.

Accepted events themselves live on EVENTS, which the consent service purges by subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from tailor.events.v1 import events_pb2
from tailor_core.db import Connection
from tailor_core.privacy import PrivacyHandlers
from tailor_core.streams import subject_token
from tailor_ingest.adapters import repository
from tailor_ingest.adapters.subject_keys import SubjectKeys


def handlers(keys: SubjectKeys) -> PrivacyHandlers:
    async def export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
        held = await repository.subject_rows(conn, [subject_token(s) for s in subject_ids])
        return {
            "rejected_events": [
                {
                    "rejection_id": row.rejection_id,
                    "rejected_at": row.rejected_at.isoformat(),
                    # Personal values stay sealed: the export's reader decrypts with the
                    # subject's key, which the consent service holds.
                    "rejection": MessageToDict(events_pb2.EventRejected.FromString(row.rejection)),
                }
                for row in held["rejections"]
            ],
            "accepted_message_ids": [
                {
                    "source_id": row["source_id"],
                    "message_id": row["message_id"],
                    "received_at": row["received_at"].isoformat(),
                }
                for row in held["received"]
            ],
        }

    async def erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
        keys.forget(subject_ids)
        return await repository.erase_subjects(conn, [subject_token(s) for s in subject_ids])

    return PrivacyHandlers("ingest", export, erase)
