"""Data-subject requests as durable workflows over the PRIVACY stream.

1. A request stores itself and one pending step per registered data holder, and publishes
   a task on PRIVACY through the outbox (one transaction).
2. Every holder (the consent service included) does its step through the core's privacy
   consumer and reports it; :meth:`PrivacyWorkflows.apply_report` records each report.
3. When every holder has confirmed, an export assembles its document; an erasure purges
   the subject's messages from every stream by subject filter, purges the request's own
   messages (they name the subject) and forgets the subject id. The consent service's own
   step has already destroyed the subject's data key.
4. A background loop re-dispatches requests whose steps lag and marks long-lagging ones stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from nats.js import JetStreamContext

from tailor.events.v1 import platform_events_pb2 as events
from tailor_consent.adapters import audit
from tailor_consent.domain.ledger import raise_if, validate_subject, validate_text
from tailor_core.db import Connection
from tailor_core.envelopes import envelope, outbound, parse
from tailor_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from tailor_core.inbox import InboundMessage
from tailor_core.outbox import enqueue
from tailor_core.streams import Naming, Stream, safe_token, subject_token

log = structlog.get_logger(__name__)

# Tasks wait in every holder's durable consumer, so a busy or restarting service catches up
# on its own; re-dispatch is for a holder that truly lost one (e.g. a dead-lettered task),
# and must not turn a backlog into a storm of duplicates.
REDISPATCH_AFTER = timedelta(minutes=5)
STUCK_AFTER = timedelta(minutes=30)
KINDS = {"export": events.PRIVACY_REQUEST_KIND_EXPORT, "erase": events.PRIVACY_REQUEST_KIND_ERASE}


@dataclass
class StepView:
    service: str
    state: str
    attempts: int
    updated_at: datetime
    error: str
    counts: dict[str, int]


@dataclass
class RequestView:
    request_id: str
    kind: str
    subject: str  # the subject id, or its token once an erasure has completed
    state: str
    reference: str
    requested_by: str
    created_at: datetime
    completed_at: datetime | None
    steps: list[StepView] = field(default_factory=list)


class PrivacyWorkflows:
    def __init__(
        self, pool: asyncpg.Pool, js: JetStreamContext, naming: Naming, holders: Sequence[str]
    ) -> None:
        self._pool = pool
        self._js = js
        self._naming = naming
        self.holders = list(dict.fromkeys(holders))
        self._stopping = asyncio.Event()

    async def request(
        self, kind: str, subject_id: str, idempotency_key: str, reference: str, actor: str
    ) -> RequestView:
        raise_if(
            validate_subject(subject_id)
            + validate_text(reference, "reference")
            + validate_text(idempotency_key, "idempotency_key")
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if idempotency_key:
                existing = await conn.fetchrow(
                    "SELECT * FROM privacy_requests WHERE idempotency_key = $1", idempotency_key
                )
                if existing is not None:
                    if existing["kind"] != kind or existing["subject_token"] != subject_token(
                        subject_id
                    ):
                        raise AlreadyExists("that idempotency key belongs to another request")
                    return await self._view(conn, existing)
            request_id = str(uuid.uuid4())
            row = await conn.fetchrow(
                """
                INSERT INTO privacy_requests (request_id, kind, subject_token, subject_id,
                                              reference, requested_by, idempotency_key)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
                """,
                request_id,
                kind,
                subject_token(subject_id),
                subject_id,
                reference,
                actor,
                idempotency_key or None,
            )
            await conn.executemany(
                "INSERT INTO privacy_steps (request_id, service) VALUES ($1, $2)",
                [(request_id, s) for s in self.holders],
            )
            await self._dispatch(conn, request_id, kind, subject_id, attempt=1)
            await audit.append(
                conn,
                f"{'export' if kind == 'export' else 'erasure'}_step",
                actor,
                subject_id=subject_id,
                request_id=request_id,
                details={"step": "requested", "holders": ",".join(self.holders)},
            )
            assert row is not None
            return await self._view(conn, row)

    async def _dispatch(
        self, conn: Connection, request_id: str, kind: str, subject_id: str, attempt: int
    ) -> None:
        task = events.PrivacyTaskRequested(
            request_id=request_id, kind=KINDS[kind], subject_ids=[subject_id], attempt=attempt
        )
        message = envelope(
            source="tailor://consent",
            event_type="tailor.privacy.v1.task_requested",
            subject=request_id,
            payload_field="privacy_task_requested",
            payload=task,
            event_id=f"task:{request_id}:{attempt}",
        )
        await enqueue(
            conn,
            [outbound(message, self._naming.privacy_subject(request_id, "consent", "requested"))],
        )

    async def handle_report_message(self, conn: Connection, message: InboundMessage) -> None:
        """Consumer handler for PRIVACY: records step reports, ignores the tasks."""
        payload = parse(message.data)
        if payload.WhichOneof("payload") == "privacy_step_reported":
            await self.apply_report(conn, payload.privacy_step_reported)

    async def apply_report(self, conn: Connection, report: events.PrivacyStepReported) -> str:
        """Record one service's report; finish the request when every holder confirmed."""
        request = await conn.fetchrow(
            "SELECT * FROM privacy_requests WHERE request_id = $1 FOR UPDATE",
            _uuid(report.request_id),
        )
        if request is None:
            raise NotFound("unknown request")
        if report.service not in self.holders:
            log.warning(
                "report from a service that is not a registered data holder", service=report.service
            )
            return str(request["state"])
        completed = report.state == events.PRIVACY_STEP_STATE_COMPLETED
        await conn.execute(
            """
            UPDATE privacy_steps
               SET state = $3, attempts = attempts + 1, updated_at = now(), error = $4,
                   counts = $5::jsonb, export_part = $6::jsonb
             WHERE request_id = $1 AND service = $2
            """,
            request["request_id"],
            report.service,
            "completed" if completed else "failed",
            report.error[:500],
            json.dumps(dict(report.counts)),
            report.export_part.decode() if report.export_part else None,
        )
        action = "export_step" if request["kind"] == "export" else "erasure_step"
        await audit.append(
            conn,
            action,
            report.service,
            request_id=str(request["request_id"]),
            details={"step": "completed" if completed else "failed", "counts": dict(report.counts)},
        )
        if request["state"] == "completed":
            return "completed"
        pending = await conn.fetchval(
            "SELECT count(*) FROM privacy_steps WHERE request_id = $1 AND state <> 'completed'",
            request["request_id"],
        )
        if pending:
            return str(request["state"])
        await self._finish(conn, request)
        return "completed"

    async def _finish(self, conn: Connection, request: asyncpg.Record) -> None:
        request_id = str(request["request_id"])
        document = None
        if request["kind"] == "export":
            parts = await conn.fetch(
                "SELECT service, export_part FROM privacy_steps"
                " WHERE request_id = $1 ORDER BY service",
                request["request_id"],
            )
            document = json.dumps(
                {
                    "request_id": request_id,
                    "subject_id": request["subject_id"],
                    "services": {
                        row["service"]: json.loads(row["export_part"]) if row["export_part"] else {}
                        for row in parts
                    },
                }
            )
        else:
            await self._purge_streams(request["subject_id"], request_id)
            # Earlier exports of the person hold their data too: the documents and parts
            # go, the requests stay (by token) for the audit trail.
            await conn.execute(
                "UPDATE privacy_steps SET export_part = NULL WHERE request_id IN "
                "(SELECT request_id FROM privacy_requests WHERE subject_token = $1 "
                "AND kind = 'export')",
                request["subject_token"],
            )
            await conn.execute(
                "UPDATE privacy_requests SET document = NULL, subject_id = NULL "
                "WHERE subject_token = $1 AND kind = 'export'",
                request["subject_token"],
            )
            # Idempotency keys are the caller's own words and may name the person.
            await conn.execute(
                "UPDATE privacy_requests SET idempotency_key = NULL "
                "WHERE subject_token = $1 AND state = 'completed'",
                request["subject_token"],
            )
        await conn.execute(
            """
            UPDATE privacy_requests
               SET state = 'completed', completed_at = now(), document = $2::jsonb,
                   subject_id = CASE WHEN kind = 'erase' THEN NULL ELSE subject_id END,
                   idempotency_key = CASE WHEN kind = 'erase' THEN NULL ELSE idempotency_key END
             WHERE request_id = $1
            """,
            request["request_id"],
            document,
        )
        await audit.append(
            conn,
            "export_step" if request["kind"] == "export" else "erasure_step",
            "consent",
            request_id=request_id,
            details={"step": "request_completed"},
        )

    async def _purge_streams(self, subject_id: str, request_id: str) -> None:
        for stream, subject_filter in self._naming.subject_filters(subject_id).items():
            await self._js.purge_stream(self._naming.stream_name(stream), subject=subject_filter)
        # The request's own tasks name the subject: purge them too.
        await self._js.purge_stream(
            self._naming.stream_name(Stream.PRIVACY),
            subject=f"{self._naming.root(Stream.PRIVACY)}.{safe_token(request_id)}.>",
        )

    async def redispatch_lagging(self, now: datetime | None = None) -> int:
        """Send the task again for requests whose steps lag; mark long-lagging ones stuck."""
        now = now or datetime.now(UTC)
        redispatched = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT * FROM privacy_requests
                 WHERE state <> 'completed' AND dispatched_at < $1
                   FOR UPDATE SKIP LOCKED
                """,
                now - REDISPATCH_AFTER,
            )
            for row in rows:
                attempt = row["attempt"] + 1
                state = "stuck" if row["created_at"] < now - STUCK_AFTER else row["state"]
                await conn.execute(
                    "UPDATE privacy_requests SET attempt = $2, dispatched_at = $3, state = $4"
                    " WHERE request_id = $1",
                    row["request_id"],
                    attempt,
                    now,
                    state,
                )
                await self._dispatch(
                    conn, str(row["request_id"]), row["kind"], row["subject_id"], attempt
                )
                if state == "stuck" and row["state"] != "stuck":
                    log.warning("data-subject request stuck", request_id=str(row["request_id"]))
                redispatched += 1
        return redispatched

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.redispatch_lagging()
            except Exception as exc:  # keep the loop; the next round tries again
                log.warning("re-dispatch failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=5.0)

    async def stop(self) -> None:
        self._stopping.set()

    async def get(self, request_id: str) -> RequestView:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM privacy_requests WHERE request_id = $1", _uuid(request_id)
            )
            if row is None:
                raise NotFound("unknown request")
            return await self._view(conn, row)

    async def list(
        self, state: str, subject_id: str, limit: int, before: datetime | None
    ) -> list[RequestView]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT * FROM privacy_requests
                 WHERE ($1 = '' OR state = $1) AND ($2 = '' OR subject_token = $2)
                   AND ($3::timestamptz IS NULL OR created_at < $3)
                 ORDER BY created_at DESC LIMIT $4
                """,
                state,
                subject_token(subject_id) if subject_id else "",
                before,
                limit,
            )
            return [await self._view(conn, row) for row in rows]

    async def document(self, request_id: str) -> bytes:
        view = await self.get(request_id)
        if view.kind != "export":
            raise FailedPrecondition("not an export")
        if view.state != "completed":
            raise FailedPrecondition("the export is not complete yet")
        async with self._pool.acquire() as conn:
            document = await conn.fetchval(
                "SELECT document FROM privacy_requests WHERE request_id = $1", _uuid(request_id)
            )
        return str(document).encode()

    async def _view(self, conn: Connection, row: asyncpg.Record) -> RequestView:
        steps = await conn.fetch(
            "SELECT * FROM privacy_steps WHERE request_id = $1 ORDER BY service", row["request_id"]
        )
        return RequestView(
            request_id=str(row["request_id"]),
            kind=row["kind"],
            subject=row["subject_id"] or row["subject_token"],
            state=row["state"],
            reference=row["reference"],
            requested_by=row["requested_by"],
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            steps=[
                StepView(
                    s["service"],
                    s["state"],
                    s["attempts"],
                    s["updated_at"],
                    s["error"],
                    json.loads(s["counts"]),
                )
                for s in steps
            ],
        )


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(
            "bad request id", [FieldViolation("request_id", "not a request id", "BAD_ID")]
        ) from None


def export_for(subject_ids: Sequence[str], decisions: Sequence[Any]) -> dict[str, Any]:
    return {"subject_ids": list(subject_ids), "consent_decisions": list(decisions)}
