"""Commands and queries of the consent ledger: load, decide, save through one transaction.

Recording a decision appends it, publishes ``ConsentDecisionRecorded`` on the CONSENT
stream through the outbox, and writes an audit entry — all in one transaction, so a
withdrawal is never stored without being announced, nor announced without being stored.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tailor.events.v1.platform_events_pb2 import ConsentDecisionRecorded
from tailor_consent.adapters import audit, repository
from tailor_consent.domain.ledger import (
    PURPOSE_NAME,
    Decision,
    DecisionKind,
    Jurisdiction,
    Purpose,
    PurposeState,
    RecordCommand,
    evaluate,
    latest_per_purpose,
    raise_if,
    validate_purposes,
    validate_subject,
    validate_text,
)
from tailor_core.envelopes import envelope, outbound, timestamp
from tailor_core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from tailor_core.outbox import enqueue
from tailor_core.streams import Naming

MAX_BATCH_CHECKS = 1000
PURPOSE_CACHE_SECONDS = 5.0
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HistoryPage:
    decisions: list[Decision]
    next_page_token: str


class ConsentLedger:
    def __init__(self, pool: asyncpg.Pool, naming: Naming, clock: Clock = _utc_now) -> None:
        self._pool = pool
        self._naming = naming
        self._clock = clock
        self._purposes: dict[str, Purpose] = {}
        self._purposes_loaded_at = -1e9

    async def start(self) -> None:
        async with self._pool.acquire() as conn:
            await repository.ensure_default_purposes(conn)

    async def purposes(self) -> dict[str, Purpose]:
        """The registry, re-read at most every few seconds (other replicas may change it)."""
        if time.monotonic() - self._purposes_loaded_at > PURPOSE_CACHE_SECONDS:
            async with self._pool.acquire() as conn:
                self._purposes = await repository.load_purposes(conn)
            self._purposes_loaded_at = time.monotonic()
        return self._purposes

    async def record(self, command: RecordCommand, actor: str) -> list[Decision]:
        registry = await self.purposes()
        now = self._clock()
        violations = validate_subject(command.subject_id)
        violations += validate_purposes(command.purposes, registry)
        violations += validate_text(command.metadata.policy_version, "metadata.policy_version")
        violations += validate_text(command.metadata.proof_reference, "metadata.proof_reference")
        if command.expires_at is not None:
            if command.kind is not DecisionKind.GRANTED:
                violations.append(FieldViolation("expires_at", "only grants expire", "NOT_ALLOWED"))
            elif command.expires_at <= now:
                violations.append(FieldViolation("expires_at", "must be in the future", "IN_PAST"))
        if command.decided_at is not None and command.decided_at > now:
            violations.append(
                FieldViolation("metadata.decided_at", "must not be in the future", "IN_FUTURE")
            )
        raise_if(violations)
        decided_at = command.decided_at or now
        pending = [
            Decision(
                decision_id=str(uuid.uuid4()),
                subject_id=command.subject_id,
                purpose=purpose,
                kind=command.kind,
                metadata=command.metadata,
                decided_at=decided_at,
                recorded_at=now,
                expires_at=command.expires_at,
            )
            for purpose in dict.fromkeys(command.purposes)  # a purpose named twice counts once
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repository.append_decisions(conn, pending)
            await repository.set_jurisdiction(
                conn, command.subject_id, command.metadata.jurisdiction
            )
            await enqueue(conn, [self.announcement(d) for d in stored])
            for decision in stored:
                await audit.append(
                    conn,
                    "consent_recorded",
                    actor,
                    subject_id=decision.subject_id,
                    purpose=decision.purpose,
                    details={
                        "kind": decision.kind.value,
                        "decision_id": decision.decision_id,
                        "source": decision.metadata.source.value,
                    },
                )
        return stored

    def announcement(self, decision: Decision) -> Any:
        """The outbox message announcing ``decision`` on the CONSENT stream."""
        payload = ConsentDecisionRecorded(
            decision_id=decision.decision_id,
            subject_id=decision.subject_id,
            purpose=decision.purpose,
            granted=decision.kind is DecisionKind.GRANTED,
            decided_at=timestamp(decision.decided_at),
            inherited=bool(decision.inherited_from),
        )
        if decision.expires_at is not None:
            payload.expires_at.CopyFrom(timestamp(decision.expires_at))
        message = envelope(
            source="tailor://consent",
            event_type="tailor.consent.v1.decision_recorded",
            subject=decision.subject_id,
            payload_field="consent_decision_recorded",
            payload=payload,
            time=decision.decided_at,
            event_id=decision.decision_id,
        )
        return outbound(
            message, self._naming.consent_subject(decision.subject_id, decision.purpose)
        )

    async def state(self, subject_id: str) -> list[PurposeState]:
        raise_if(validate_subject(subject_id))
        return (await self._states([subject_id]))[subject_id]

    async def check_many(self, pairs: Sequence[tuple[str, str]]) -> list[PurposeState]:
        """Answers for (subject, purpose) pairs, in order."""
        if len(pairs) > MAX_BATCH_CHECKS:
            raise InvalidArgument(
                "too many checks",
                [FieldViolation("checks", f"at most {MAX_BATCH_CHECKS}", "TOO_MANY")],
            )
        registry = await self.purposes()
        violations = []
        for i, (subject_id, purpose) in enumerate(pairs):
            violations += validate_subject(subject_id, f"checks[{i}].subject_id")
            if purpose not in registry:
                violations.append(
                    FieldViolation(f"checks[{i}].purpose", "unknown purpose", "UNKNOWN_PURPOSE")
                )
        raise_if(violations)
        states = await self._states(sorted({subject for subject, _ in pairs}))
        by_pair = {(s, state.purpose): state for s, rows in states.items() for state in rows}
        return [by_pair[pair] for pair in pairs]

    async def check(self, subject_id: str, purpose: str) -> PurposeState:
        registry = await self.purposes()
        violations = validate_subject(subject_id)
        if purpose not in registry:
            violations.append(FieldViolation("purpose", "unknown purpose", "UNKNOWN_PURPOSE"))
        raise_if(violations)
        async with self._pool.acquire() as conn:
            latest, jurisdiction = await repository.latest_decision(conn, subject_id, purpose)
        return evaluate(registry[purpose], latest, jurisdiction or Jurisdiction.GDPR, self._clock())

    async def _states(self, subject_ids: Sequence[str]) -> dict[str, list[PurposeState]]:
        registry = await self.purposes()
        async with self._pool.acquire() as conn:
            decisions = await repository.decisions_of_many(conn, subject_ids)
            jurisdictions = await repository.jurisdictions_of(conn, subject_ids)
        now = self._clock()
        states = {}
        for subject_id in subject_ids:
            latest = latest_per_purpose(decisions.get(subject_id, []))
            jurisdiction = jurisdictions.get(subject_id, Jurisdiction.GDPR)
            states[subject_id] = [
                evaluate(purpose, latest.get(name), jurisdiction, now)
                for name, purpose in registry.items()
            ]
        return states

    async def history(
        self, subject_id: str, purpose: str, page_size: int, page_token: str
    ) -> HistoryPage:
        violations = validate_subject(subject_id)
        after = 0
        if page_token:
            try:
                after = int(base64.urlsafe_b64decode(page_token.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                violations.append(
                    FieldViolation("page.page_token", "not a token from this API", "BAD_TOKEN")
                )
        raise_if(violations)
        size = min(page_size or 100, 1000)
        async with self._pool.acquire() as conn:
            rows = await repository.decisions_of(
                conn, subject_id, purpose=purpose, after_position=after, limit=size + 1
            )
        more = len(rows) > size
        rows = rows[:size]
        token = (
            base64.urlsafe_b64encode(str(rows[-1][0]).encode()).decode() if more and rows else ""
        )
        return HistoryPage([d for _, d in rows], token)

    async def upsert_purpose(self, purpose: Purpose, actor: str) -> Purpose:
        if not PURPOSE_NAME.match(purpose.name):
            raise InvalidArgument(
                "bad purpose name",
                [
                    FieldViolation(
                        "purpose.name",
                        "lower-case letters, digits and _; starts with a letter",
                        "BAD_NAME",
                    )
                ],
            )
        registry = await self.purposes()
        if registry.get(purpose.name, purpose).built_in:
            raise FailedPrecondition(f"{purpose.name} is a built-in purpose and cannot be changed")
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await repository.upsert_purpose(conn, purpose)
            await audit.append(
                conn,
                "purpose_changed",
                actor,
                purpose=purpose.name,
                details={"allowed_services": list(purpose.allowed_services)},
            )
        self._purposes_loaded_at = -1e9
        return stored

    async def report(
        self, start: datetime, end: datetime, bucket: str, purposes: Sequence[str]
    ) -> list[dict[str, Any]]:
        violations = []
        if bucket not in ("day", "week", "month"):
            violations.append(FieldViolation("bucket", "day, week or month", "BAD_BUCKET"))
        if end <= start:
            violations.append(FieldViolation("range", "end must be after start", "BAD_RANGE"))
        raise_if(violations)
        async with self._pool.acquire() as conn:
            rows = await repository.report(conn, start, end, bucket, purposes)
        for row in rows:
            total = row["grants"] + row["denials"] + row["withdrawals"]
            row["grant_rate"] = row["grants"] / total if total else 0.0
        return [dict(row) for row in rows]
