"""The segment service's durable consumers: customer events (EVENTS), profile changes and
merges (PROFILE) and consent decisions (CONSENT), each feeding the membership engine inside
the inbox transaction, so a redelivered message changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf import json_format
from nats.js import JetStreamContext

from tailor.events.v1 import platform_events_pb2 as events
from tailor_core.bus import ConsumerSpec
from tailor_core.db import Connection
from tailor_core.envelopes import parse
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.privacy import erased, hold_off_erasure
from tailor_core.streams import Naming, Stream
from tailor_segment.adapters import facts, memberships
from tailor_segment.domain.evaluation import EventFact, event_fact
from tailor_segment.membership import Cause, LiveSegment, MembershipEngine, Selector


def _consumer(
    *,
    pool: asyncpg.Pool,
    js: JetStreamContext,
    naming: Naming,
    stream: Stream,
    durable: str,
    description: str,
    handler: Any,
    batch_size: int,
) -> InboxConsumer:
    return InboxConsumer(
        pool=pool,
        js=js,
        spec=ConsumerSpec(
            stream=naming.stream_name(stream),
            durable=durable,
            filter_subject=naming.all_subjects(stream),
            description=description,
            max_ack_pending=batch_size * 4,
        ),
        batch_handler=handler,
        dead_letter_subject=naming.dead_letter_subject("segment", durable),
        batch_size=batch_size,
        fetch_timeout_seconds=0.5,
    )


def _names_selector(names: frozenset[str], new_subject: bool) -> Selector | None:
    """A subject's events can change only segments whose rules match those events, except
    for a subject seen for the first time, whom every rule must be asked about (a rule such
    as "absent X within 7d" holds for someone who has done nothing yet)."""
    if new_subject:
        return None
    return lambda segment: bool(segment.event_names & names)


class EventsHandler:
    """EVENTS → event facts → memberships of the subjects concerned."""

    def __init__(self, engine: MembershipEngine) -> None:
        self._engine = engine

    async def __call__(self, conn: Connection, messages: Sequence[InboundMessage]) -> None:
        now = datetime.now(UTC)
        found: list[tuple[str, str, EventFact]] = []
        for message in messages:
            envelope = parse(message.data)
            if not envelope.HasField("customer_event"):
                continue
            event = envelope.customer_event
            primary = event.user_id or event.anonymous_id
            fact = event_fact(event)
            if primary and fact is not None:
                found.append((message.event_id, primary, fact))
        await hold_off_erasure(conn)
        resolved = await facts.resolve(conn, {primary for _, primary, _ in found})
        # In flight while the person was erased: storing it would bring them back.
        gone = await erased(conn, set(resolved) | set(resolved.values()))
        rows = [
            (eid, resolved[primary], fact)
            for eid, primary, fact in found
            if primary not in gone and resolved[primary] not in gone
        ]
        if not rows:
            return
        seen: dict[str, datetime | None] = {}
        names: dict[str, set[str]] = {}
        for _, subject, fact in rows:
            latest = seen.get(subject)
            seen[subject] = fact.at if latest is None else max(latest, fact.at)
            names.setdefault(subject, set()).add(fact.name)
        new_subjects = await facts.touch(conn, seen)
        await facts.add_events(conn, rows)
        await self._engine.evaluate(
            conn,
            {
                subject: _names_selector(frozenset(names[subject]), subject in new_subjects)
                for subject in seen
            },
            now,
            Cause.EVENT,
        )


def _traits_selector(changed: frozenset[str] | None) -> Selector | None:
    """Segments naming a changed trait; all of them for a new profile (None)."""
    if changed is None:
        return None
    return lambda segment: bool(segment.traits & changed)


class ProfileHandler:
    """PROFILE → subjects' trait maps and merges → memberships. Trait changes of a batch are
    stored as they come and evaluated together, once per subject; a merge first evaluates
    what came before it, since it moves facts between subjects."""

    def __init__(self, engine: MembershipEngine) -> None:
        self._engine = engine

    async def __call__(self, conn: Connection, messages: Sequence[InboundMessage]) -> None:
        now = datetime.now(UTC)
        await hold_off_erasure(conn)
        pending: dict[str, frozenset[str] | None] = {}  # subject -> changed traits (None: all)
        for message in messages:
            envelope = parse(message.data)
            if envelope.HasField("profile_changed"):
                await self._changed(conn, envelope.profile_changed, pending)
            elif envelope.HasField("profiles_merged"):
                await self._evaluate(conn, pending, now)
                pending.clear()
                await self._merged(conn, envelope.profiles_merged, now)
        await self._evaluate(conn, pending, now)

    async def _evaluate(
        self, conn: Connection, pending: dict[str, frozenset[str] | None], now: datetime
    ) -> None:
        if pending:
            await self._engine.evaluate(
                conn,
                {s: _traits_selector(changed) for s, changed in pending.items()},
                now,
                Cause.PROFILE,
            )

    async def _changed(
        self,
        conn: Connection,
        change: events.ProfileChanged,
        pending: dict[str, frozenset[str] | None],
    ) -> None:
        values = json_format.MessageToDict(change.non_personal_values)
        removed = [name for name, value in values.items() if value is None]
        kept = {name: value for name, value in values.items() if value is not None}
        subject = (await facts.resolve(conn, [change.profile_id]))[change.profile_id]
        if await erased(conn, {subject, change.profile_id}):
            return
        await facts.update_traits(conn, subject, kept, removed)
        if change.created or (subject in pending and pending[subject] is None):
            pending[subject] = None
        else:
            pending[subject] = (pending.get(subject) or frozenset()) | set(change.changed_traits)

    async def _merged(self, conn: Connection, merge: events.ProfilesMerged, now: datetime) -> None:
        survivor = merge.surviving_profile_id
        if await erased(conn, {survivor, *merge.merged_profile_ids}):
            return
        for merged in merge.merged_profile_ids:
            held = (await memberships.of_subjects(conn, [merged]))[merged]
            await self._engine.exit_all(
                conn,
                [(segment_id, merged) for segment_id in held],
                events.MEMBERSHIP_CHANGE_REASON_PROFILES_MERGED,
                now,
                f"merged into {survivor}",
            )
            await facts.merge(conn, survivor, merged)
        await facts.touch(conn, {survivor: None})
        await self._engine.evaluate(conn, {survivor: None}, now, Cause.MERGED)


class ConsentHandler:
    """CONSENT → memberships of segments with the decided purpose (withdrawal: exit)."""

    def __init__(self, engine: MembershipEngine) -> None:
        self._engine = engine

    async def __call__(self, conn: Connection, messages: Sequence[InboundMessage]) -> None:
        now = datetime.now(UTC)
        for message in messages:
            envelope = parse(message.data)
            if not envelope.HasField("consent_decision_recorded"):
                continue
            decision = envelope.consent_decision_recorded
            subject = (await facts.resolve(conn, [decision.subject_id]))[decision.subject_id]
            expired = decision.HasField("expires_at") and decision.expires_at.ToDatetime(UTC) <= now
            purpose = decision.purpose

            def same_purpose(segment: LiveSegment, purpose: str = purpose) -> bool:
                return segment.purpose == purpose

            await self._engine.evaluate(
                conn,
                {subject: same_purpose},
                now,
                Cause.CONSENT,
                # The decision in hand is the newest: the consent client's cache may not
                # have heard of it yet.
                consent={(subject, purpose): decision.granted and not expired},
            )


def segment_consumers(
    *,
    pool: asyncpg.Pool,
    js: JetStreamContext,
    naming: Naming,
    engine: MembershipEngine,
    events_batch: int,
) -> list[InboxConsumer]:
    common = {"pool": pool, "js": js, "naming": naming}
    return [
        _consumer(
            **common,  # type: ignore[arg-type]
            stream=Stream.EVENTS,
            durable="segment_events",
            description="segment membership from customer events",
            handler=EventsHandler(engine),
            batch_size=events_batch,
        ),
        _consumer(
            **common,  # type: ignore[arg-type]
            stream=Stream.PROFILE,
            durable="segment_profile",
            description="segment membership from profile changes and merges",
            handler=ProfileHandler(engine),
            batch_size=events_batch,
        ),
        _consumer(
            **common,  # type: ignore[arg-type]
            stream=Stream.CONSENT,
            durable="segment_consent",
            description="segment membership from consent decisions",
            handler=ConsentHandler(engine),
            batch_size=50,
        ),
    ]
