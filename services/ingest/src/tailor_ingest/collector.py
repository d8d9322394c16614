"""The way every event goes through ingest, whichever RPC brought it.

validate → drop in-call repeats → consent gate → seal personal fields → in one Postgres
transaction: claim the message ids (resends become DUPLICATE), store rejections, publish the
new events to EVENTS and the new rejections to REJECTED and wait for JetStream's acks → commit
→ answer. Publishing inside the transaction is what excludes loss and duplication (see
docs/delivery.md, "Ingest"): nothing is acknowledged to the client before JetStream stored
it, and a crash between JetStream's ack and the commit leaves the claim uncommitted, so the
client's retry publishes again with the same Nats-Msg-Id, which JetStream's duplicate window
drops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from nats.js import JetStreamContext

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor_core import failpoints
from tailor_core.bus import publish_acked
from tailor_core.consent_client import ConsentClient
from tailor_core.crypto import DataKey, encrypt_field
from tailor_core.envelopes import (
    customer_event_envelope,
    customer_event_id,
    customer_event_subject,
    customer_subject_id,
    envelope,
)
from tailor_core.errors import Unavailable
from tailor_core.streams import Naming, subject_token
from tailor_ingest.adapters import repository
from tailor_ingest.adapters.subject_keys import SubjectKeys
from tailor_ingest.api_keys import Caller
from tailor_ingest.domain.personal import personal_fields
from tailor_ingest.domain.validation import Verdict, bad_id, derive_message_id, validate_event
from tailor_ingest.plans import PlanBook
from tailor_ingest.quality import QualityCounters

log = structlog.get_logger(__name__)

ACCEPTED = ingest_pb2.EVENT_OUTCOME_ACCEPTED
DUPLICATE = ingest_pb2.EVENT_OUTCOME_DUPLICATE
REJECTED = ingest_pb2.EVENT_OUTCOME_REJECTED
SUPPRESSED = ingest_pb2.EVENT_OUTCOME_SUPPRESSED
#: Consent answers that mean "no answer could be had", as opposed to "no consent".
_UNAVAILABLE_REASONS = frozenset({"consent_unavailable", "timeout"})
#: A rejection larger than this goes on REJECTED without its event (NATS allows 1 MiB).
MAX_STREAM_REJECTION_BYTES = 256 * 1024
PUBLISH_TIMEOUT_SECONDS = 5.0


def _reason_name(reason: int) -> str:
    return str(events_pb2.ValidationReason.Name(reason))  # type: ignore[arg-type]


@dataclass(slots=True)
class _Item:
    index: int
    event: events_pb2.CustomerEvent
    verdict: Verdict
    subject_id: str
    result: ingest_pb2.EventResult = field(default_factory=ingest_pb2.EventResult)
    #: The event's personal values with their paths, found once.
    personal: list[tuple[str, common_pb2.PersonalField]] = field(default_factory=list)


class Collector:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        naming: Naming,
        consent: ConsentClient,
        keys: SubjectKeys,
        plans: PlanBook,
        counters: QualityCounters,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._js = js
        self._naming = naming
        self._consent = consent
        self._keys = keys
        self._plans = plans
        self._counters = counters
        self._clock = clock

    async def collect(
        self,
        caller: Caller,
        events: Sequence[events_pb2.CustomerEvent],
        *,
        expected_kind: str | None = None,
    ) -> list[ingest_pb2.EventResult]:
        """One result per event, in order. Raises Unavailable when nothing could be stored
        (Postgres, NATS or the key service away): then no event of the call was kept."""
        now = self._clock()
        plan = await self._plans.current(caller.source_id)
        items = [
            self._validated(index, event, caller, plan, now, expected_kind)
            for index, event in enumerate(events)
        ]
        live = self._drop_repeats(caller, items)
        candidates = [item for item in live if not item.verdict.rejected]
        rejected = [item for item in live if item.verdict.rejected]
        accepted = await self._gate(caller, candidates)
        accepted, erased = await self._seal(accepted, rejected)
        for item in erased:
            self._suppress(caller, item, ingest_pb2.SUPPRESSION_REASON_NO_CONSENT)
        await self._store_and_publish(caller, accepted, rejected, now)
        return [item.result for item in items]

    def _validated(
        self,
        index: int,
        event: events_pb2.CustomerEvent,
        caller: Caller,
        plan: object,
        now: datetime,
        expected_kind: str | None,
    ) -> _Item:
        event.source_id = caller.source_id  # the key decides the source, never the client
        if not event.message_id:
            event.message_id = derive_message_id(event)
        verdict = validate_event(event, plan, now=now, expected_kind=expected_kind)  # type: ignore[arg-type]
        if any(issue.field == "message_id" for issue in verdict.errors):
            # A malformed id must not become a key in our tables or a Nats-Msg-Id.
            event.message_id = derive_message_id(event)
        item = _Item(index, event, verdict, customer_subject_id(event))
        # Validation found them unless it stopped early (an oversized event): look again then,
        # since a rejected event's personal values must be sealed or removed too.
        found = verdict.personal
        item.personal = found if found is not None else list(personal_fields(event))
        item.result.message_id = event.message_id
        return item

    def _drop_repeats(self, caller: Caller, items: list[_Item]) -> list[_Item]:
        """The same message id twice in one call: the later copies are duplicates."""
        seen: set[str] = set()
        live = []
        for item in items:
            if item.event.message_id in seen:
                item.result.outcome = DUPLICATE
                self._counters.count(caller.source_id, "duplicate")
                continue
            seen.add(item.event.message_id)
            live.append(item)
        return live

    async def _gate(self, caller: Caller, items: list[_Item]) -> list[_Item]:
        """Keep the events whose subject consented to their collection purpose."""
        answers = await self._consent.check_many(
            (item.subject_id, item.verdict.purpose) for item in items
        )
        kept = []
        for item in items:
            answer = answers[(item.subject_id, item.verdict.purpose)]
            if answer.allowed:
                kept.append(item)
            elif answer.reason in _UNAVAILABLE_REASONS:
                self._suppress(caller, item, ingest_pb2.SUPPRESSION_REASON_CONSENT_UNAVAILABLE)
            else:
                self._suppress(caller, item, ingest_pb2.SUPPRESSION_REASON_NO_CONSENT)
        return kept

    def _suppress(self, caller: Caller, item: _Item, reason: int) -> None:
        item.result.outcome = SUPPRESSED
        item.result.suppression_reason = reason  # type: ignore[assignment]
        item.result.suppression_purpose = item.verdict.purpose
        item.result.ClearField("warnings")
        self._counters.count(caller.source_id, "suppressed")
        self._counters.count(
            caller.source_id,
            "suppression",
            str(ingest_pb2.SuppressionReason.Name(reason)),  # type: ignore[arg-type]
            item.verdict.purpose,
        )

    async def _seal(
        self, accepted: list[_Item], rejected: list[_Item]
    ) -> tuple[list[_Item], list[_Item]]:
        """Encrypt every personal value with its subject's key; return (kept, erased).

        An accepted event of an erased subject cannot be sealed and is not kept. A rejected
        event's personal values are sealed too, or removed when there is no key for them.
        """
        # A rejected event's subject id may itself be malformed: no key is asked for it, and
        # its personal values are removed instead.
        holders = [
            item
            for item in [*accepted, *rejected]
            if item.subject_id and item.personal and not bad_id(item.subject_id)
        ]
        keys = await self._keys.keys_for(item.subject_id for item in holders) if holders else {}
        holder_ids = {id(item) for item in holders}
        kept, erased = [], []
        for item in accepted:
            key = keys.get(item.subject_id)
            if id(item) in holder_ids and key is None:
                erased.append(item)
                continue
            _seal_fields(item.personal, key)
            kept.append(item)
        for item in rejected:
            _seal_fields(item.personal, keys.get(item.subject_id))
        return kept, erased

    async def _store_and_publish(
        self, caller: Caller, accepted: list[_Item], rejected: list[_Item], now: datetime
    ) -> None:
        rejections = [self._rejection(caller, item, now) for item in rejected]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await repository.claim_message_ids(
                    conn,
                    caller.source_id,
                    [item.event.message_id for item in accepted],
                    [subject_token(item.subject_id) for item in accepted],
                )
                new_rejections = await repository.insert_rejections(
                    conn, [row for row, _ in rejections]
                )
                await publish_acked(
                    self._js,
                    [
                        self._event_message(item, now)
                        for item in accepted
                        if item.event.message_id in fresh
                    ]
                    + [
                        self._rejection_message(row, message)
                        for row, message in rejections
                        if row.rejection_id in new_rejections
                    ],
                    timeout=PUBLISH_TIMEOUT_SECONDS,
                )
                failpoints.hit("ingest.after_publish")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("events not stored; the caller will retry", error=type(exc).__name__)
            raise Unavailable("events could not be stored; retry") from None
        except Exception as exc:
            if type(exc).__module__.startswith("nats"):
                log.warning("events not published; the caller will retry", error=type(exc).__name__)
                raise Unavailable("events could not be published; retry") from None
            raise
        self._settle(caller, accepted, fresh, rejected)

    def _settle(
        self, caller: Caller, accepted: list[_Item], fresh: set[str], rejected: list[_Item]
    ) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        for item in accepted:
            if item.event.message_id not in fresh:
                item.result.outcome = DUPLICATE
                counts["duplicate", ""] += 1
                continue
            item.result.outcome = ACCEPTED
            item.result.warnings.extend(item.verdict.warnings)
            counts["accepted", ""] += 1
            if item.verdict.warnings:
                counts["accepted_with_warnings", ""] += 1
            for issue in item.verdict.warnings:
                counts["warning", _reason_name(issue.reason)] += 1
        for item in rejected:
            item.result.outcome = REJECTED
            item.result.errors.extend(item.verdict.errors)
            counts["rejected", ""] += 1
            for code in {issue.reason for issue in item.verdict.errors}:
                counts["rejection", _reason_name(code)] += 1
        for (metric, name), n in counts.items():
            self._counters.count(caller.source_id, metric, name, n=n)

    def _rejection(
        self, caller: Caller, item: _Item, now: datetime
    ) -> tuple[repository.RejectionRow, events_pb2.Envelope]:
        rejection = events_pb2.EventRejected(
            message_id=item.event.message_id,
            source_id=caller.source_id,
            event=item.verdict.event_name,
            errors=item.verdict.errors,
            rejected_event=item.event,
            api_key_id=caller.key_id,
        )
        rejection_id = "rejected:" + customer_event_id(caller.source_id, item.event.message_id)
        message = envelope(
            source=f"tailor://ingest/sources/{caller.source_id}",
            event_type="tailor.ingest.v1.event_rejected",
            subject=item.subject_id,
            payload_field="event_rejected",
            payload=rejection,
            time=now,
            event_id=rejection_id,
        )
        row = repository.RejectionRow(
            rejection_id=rejection_id,
            source_id=caller.source_id,
            message_id=item.event.message_id,
            event_name=item.verdict.event_name,
            reasons=sorted({issue.reason for issue in item.verdict.errors}),
            subject_token=subject_token(item.subject_id) if item.subject_id else "",
            rejection=rejection.SerializeToString(),
            rejected_at=now,
        )
        return row, message

    def _event_message(self, item: _Item, now: datetime) -> tuple[str, bytes, dict[str, str]]:
        flags = [_reason_name(issue.reason) for issue in item.verdict.warnings]
        message = customer_event_envelope(item.event, received_at=now, quality_flags=flags)
        return (
            customer_event_subject(self._naming, item.event),
            message.SerializeToString(),
            {"Nats-Msg-Id": message.id, "Tailor-Type": message.type},
        )

    def _rejection_message(
        self, row: repository.RejectionRow, message: events_pb2.Envelope
    ) -> tuple[str, bytes, dict[str, str]]:
        subject = self._naming.rejected_subject(row.source_id, message.subject)
        headers = {"Nats-Msg-Id": message.id, "Tailor-Type": message.type}
        payload = message.SerializeToString()
        if len(payload) > MAX_STREAM_REJECTION_BYTES:
            # Over what a NATS message may carry, the stream gets the reasons only (the
            # whole rejection is in the table, for ListRejectedEvents): otherwise the
            # caller would be told to retry something that can never be published.
            clipped = events_pb2.Envelope()
            clipped.CopyFrom(message)
            clipped.subject = ""
            rejected = clipped.event_rejected
            rejected.ClearField("rejected_event")
            rejected.message_id = rejected.message_id[:256]
            rejected.event = rejected.event[:256]
            del rejected.errors[20:]
            for error in rejected.errors:
                error.field = error.field[:256]
                error.description = error.description[:512]
            payload = clipped.SerializeToString()
            headers["Tailor-Clipped"] = "true"
        return subject, payload, headers


def _seal_fields(personal: list[tuple[str, common_pb2.PersonalField]], key: DataKey | None) -> None:
    """Seal each plaintext personal value with ``key``; without a key, remove the values."""
    for path, value in personal:
        if key is not None and value.WhichOneof("value") == "plaintext":
            value.encrypted.CopyFrom(encrypt_field(key, path, value.plaintext))
        else:
            value.Clear()
