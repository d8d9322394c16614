"""Every service's part in data-subject requests (ARCHITECTURE.md §5).

The consent service publishes a ``PrivacyTaskRequested`` on ``privacy.<request>.consent.requested``.
Each service holding personal data registers two handlers — export (gather what it holds
about the subjects) and erase (delete it) — and :func:`privacy_consumer` runs them through
a durable consumer with the inbox, then reports the step on
``privacy.<request>.<service>.completed`` through the outbox, in the same transaction. A
service that was down when the request arrived does its step when it comes back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from tailor.events.v1 import platform_events_pb2 as events
from tailor_core.bus import ConsumerSpec
from tailor_core.db import Connection
from tailor_core.envelopes import envelope, outbound, parse
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.outbox import enqueue
from tailor_core.streams import Naming, Stream, subject_token

#: Gather what the service holds about the subjects, as JSON-ready data.
ExportHandler = Callable[[Connection, Sequence[str]], Awaitable[dict[str, Any]]]
#: Delete what the service holds about the subjects; return rows deleted per table.
EraseHandler = Callable[[Connection, Sequence[str]], Awaitable[dict[str, int]]]


@dataclass(frozen=True)
class PrivacyHandlers:
    service: str
    export: ExportHandler
    erase: EraseHandler


async def holds_nothing_export(conn: Connection, subject_ids: Sequence[str]) -> dict[str, Any]:
    """For a service that stores no personal data (yet): an honest, empty export."""
    return {}


async def holds_nothing_erase(conn: Connection, subject_ids: Sequence[str]) -> dict[str, int]:
    return {}


#: How long an erased subject's token is kept to turn away its in-flight messages.
ERASED_KEPT_SECONDS = 24 * 3600

#: One advisory lock per schema between erasure (exclusive) and the consumers that write
#: about subjects (shared): an erasure waits for batches in flight, and batches after it
#: see its tombstones.
_ERASURE_LOCK = "hashtext(current_schema() || ':erasure')"


async def hold_off_erasure(conn: Connection) -> None:
    """Call first in a transaction that writes about subjects (shared with other writers)."""
    await conn.execute(f"SELECT pg_advisory_xact_lock_shared({_ERASURE_LOCK})")


async def erased(conn: Connection, subject_ids: Iterable[str]) -> set[str]:
    """Those of ``subject_ids`` erased within the last day: drop what arrives about them."""
    ids = sorted(set(subject_ids))
    if not ids:
        return set()
    rows = await conn.fetch(
        "SELECT token FROM erased_subjects WHERE token = ANY($1::text[])",
        [subject_token(i) for i in ids],
    )
    tombstones = {row["token"] for row in rows}
    return {i for i in ids if subject_token(i) in tombstones}


async def remember_erased(conn: Connection, subject_ids: Sequence[str]) -> None:
    """Tombstone ``subject_ids`` (the erasure step does it for the ids it was given; a
    handler adds the other ids of the person it finds)."""
    await conn.execute(f"SELECT pg_advisory_xact_lock({_ERASURE_LOCK})")
    await conn.execute(
        "DELETE FROM erased_subjects WHERE erased_at < now() - make_interval(secs => $1)",
        ERASED_KEPT_SECONDS,
    )
    await conn.executemany(
        "INSERT INTO erased_subjects (token) VALUES ($1) ON CONFLICT (token) DO UPDATE "
        "SET erased_at = now()",
        [(subject_token(i),) for i in subject_ids],
    )


def task_subject_filter(naming: Naming) -> str:
    return f"{naming.root(Stream.PRIVACY)}.*.consent.requested"


def report_event_id(request_id: str, service: str, attempt: int) -> str:
    return f"privacy:{request_id}:{service}:{attempt}"


def privacy_consumer(
    *, pool: asyncpg.Pool, js: JetStreamContext, naming: Naming, handlers: PrivacyHandlers
) -> InboxConsumer:
    """The durable consumer that carries out ``handlers.service``'s privacy steps."""

    async def handle(conn: Connection, message: InboundMessage) -> None:
        task = parse(message.data).privacy_task_requested
        subjects = list(task.subject_ids)
        report = events.PrivacyStepReported(
            request_id=task.request_id,
            service=handlers.service,
            state=events.PRIVACY_STEP_STATE_COMPLETED,
        )
        if task.kind == events.PRIVACY_REQUEST_KIND_EXPORT:
            part = await handlers.export(conn, subjects)
            report.export_part = json.dumps(part, default=str, sort_keys=True).encode()
        elif task.kind == events.PRIVACY_REQUEST_KIND_ERASE:
            await remember_erased(conn, subjects)
            for table, count in (await handlers.erase(conn, subjects)).items():
                report.counts[table] = count
        else:
            return  # a kind this version does not know: leave it to a newer one
        reported = envelope(
            source=f"tailor://{handlers.service}",
            event_type="tailor.privacy.v1.step_reported",
            subject=task.request_id,
            payload_field="privacy_step_reported",
            payload=report,
            event_id=report_event_id(task.request_id, handlers.service, task.attempt),
        )
        await enqueue(
            conn,
            [
                outbound(
                    reported, naming.privacy_subject(task.request_id, handlers.service, "completed")
                )
            ],
        )

    return InboxConsumer(
        pool=pool,
        js=js,
        spec=ConsumerSpec(
            stream=naming.stream_name(Stream.PRIVACY),
            durable=f"{handlers.service}_privacy",
            filter_subject=task_subject_filter(naming),
            description=f"{handlers.service}'s steps of data-subject requests",
        ),
        handler=handle,
        dead_letter_subject=naming.dead_letter_subject(handlers.service, "privacy"),
    )
