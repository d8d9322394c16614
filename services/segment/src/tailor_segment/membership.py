"""Real-time membership: re-evaluate subjects' segments when something they depend on changes
(an event, a profile change, a consent decision, the clock, a new definition), write the
entries and exits, tell the clock when each verdict can next change, and announce every
change on the SEGMENT stream through the outbox — all in the caller's transaction.

Evaluation is a pure function of what is stored about a subject at ``now``
(tailor_segment.domain.evaluation), and every evaluation of a subject holds that subject's
row lock, so the order in which replicas happen to receive messages cannot change a
membership: only the facts can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import structlog

from tailor.events.v1 import platform_events_pb2 as events
from tailor.segment.v1 import rules_pb2
from tailor_core.consent_client import ConsentClient
from tailor_core.db import Connection
from tailor_core.envelopes import envelope, outbound, timestamp
from tailor_core.outbox import OutboundMessage, enqueue
from tailor_core.streams import Naming
from tailor_segment.adapters import definitions, facts, memberships
from tailor_segment.adapters.memberships import Member
from tailor_segment.domain import rules
from tailor_segment.domain.clustering import ClusterModel, assign
from tailor_segment.domain.evaluation import SubjectFacts, Verdict, evaluate

log = structlog.get_logger(__name__)

R = events.MembershipChangeReason


class Cause(Enum):
    """What started an evaluation; it decides the reason recorded for a change."""

    EVENT = "event"
    PROFILE = "profile"
    CLOCK = "clock"
    CONSENT = "consent"
    CREATED = "created"  # backfill of a new segment
    REDEFINED = "redefined"  # backfill of a new version
    MERGED = "merged"


@dataclass(frozen=True, slots=True)
class LiveSegment:
    """A segment whose membership is kept, with what its rule depends on."""

    segment_id: str
    version: int
    purpose: str
    rule: rules.Rule
    references: frozenset[str]
    event_names: frozenset[str]
    traits: frozenset[str]
    cluster_runs: frozenset[str]
    needs_events: bool
    lookback: timedelta | None


def live_segment(stored: definitions.StoredSegment) -> LiveSegment:
    rule = rules.from_proto(rules_pb2.Rule.FromString(stored.rule))
    matchers = rules.event_matchers(rule)
    return LiveSegment(
        segment_id=stored.segment_id,
        version=stored.version,
        purpose=stored.purpose,
        rule=rule,
        references=frozenset(rules.referenced_segments(rule)),
        event_names=frozenset(m.event for m in matchers),
        traits=frozenset(rules.referenced_traits(rule)),
        cluster_runs=frozenset(
            n.run_id for n in rules.nodes(rule) if isinstance(n, rules.ClusterAssignment)
        ),
        needs_events=bool(matchers),
        lookback=rules.lookback(rule),
    )


def dependency_order(segments: Iterable[LiveSegment]) -> list[LiveSegment]:
    """Segments with the ones they refer to first (rules have no cycles: the API refuses
    them; a reference to a segment that is not live simply stays as stored)."""
    by_id = {s.segment_id: s for s in segments}
    ordered: list[LiveSegment] = []
    placed: set[str] = set()

    def place(segment: LiveSegment, path: frozenset[str]) -> None:
        if segment.segment_id in placed or segment.segment_id in path:
            return
        for ref in sorted(segment.references):
            if ref in by_id:
                place(by_id[ref], path | {segment.segment_id})
        placed.add(segment.segment_id)
        ordered.append(segment)

    for segment in sorted(by_id.values(), key=lambda s: s.segment_id):
        place(segment, frozenset())
    return ordered


class Definitions:
    """The live segments in dependency order, parsed once per version."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, int], LiveSegment] = {}

    async def load(self, conn: Connection) -> list[LiveSegment]:
        found = []
        for stored in await definitions.live(conn):
            key = (stored.segment_id, stored.version)
            if key not in self._parsed:
                self._parsed[key] = live_segment(stored)
            found.append(self._parsed[key])
        return dependency_order(found)


def with_dependents(segments: Sequence[LiveSegment], chosen: Iterable[str]) -> frozenset[str]:
    """``chosen`` and every live segment that refers to one of them, transitively."""
    found = set(chosen)
    grew = True
    while grew:
        grew = False
        for segment in segments:
            if segment.segment_id not in found and segment.references & found:
                found.add(segment.segment_id)
                grew = True
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Change:
    segment_id: str
    subject_id: str
    entered: bool
    reason: int
    explanation: str


@dataclass
class Outcome:
    changes: list[Change] = field(default_factory=list)
    evaluated: int = 0

    @property
    def entered(self) -> int:
        return sum(1 for c in self.changes if c.entered)

    @property
    def exited(self) -> int:
        return sum(1 for c in self.changes if not c.entered)


#: Which segments to evaluate, per subject: those the selector picks (and the segments that
#: refer to them), or all of them for None.
Selector = Callable[[LiveSegment], bool]
Targets = Mapping[str, Selector | None]


def _reasons(cause: Cause) -> tuple[int, int]:
    """(entry reason, exit reason) for a change the rule itself decided."""
    return {
        Cause.CLOCK: (
            R.MEMBERSHIP_CHANGE_REASON_RULE_MATCHED,
            R.MEMBERSHIP_CHANGE_REASON_WINDOW_EXPIRED,
        ),
        Cause.CONSENT: (
            R.MEMBERSHIP_CHANGE_REASON_CONSENT_GRANTED,
            R.MEMBERSHIP_CHANGE_REASON_RULE_NO_LONGER_MATCHES,
        ),
        Cause.REDEFINED: (
            R.MEMBERSHIP_CHANGE_REASON_DEFINITION_CHANGED,
            R.MEMBERSHIP_CHANGE_REASON_DEFINITION_CHANGED,
        ),
        Cause.MERGED: (
            R.MEMBERSHIP_CHANGE_REASON_PROFILES_MERGED,
            R.MEMBERSHIP_CHANGE_REASON_PROFILES_MERGED,
        ),
    }.get(
        cause,
        (
            R.MEMBERSHIP_CHANGE_REASON_RULE_MATCHED,
            R.MEMBERSHIP_CHANGE_REASON_RULE_NO_LONGER_MATCHES,
        ),
    )


#: A cluster assignment depends on recency, which moves with no event: look again this often.
CLUSTER_RECHECK = timedelta(days=1)


def _next_look(segment: LiveSegment, verdict: Verdict, now: datetime) -> datetime | None:
    """When the clock should evaluate this verdict again."""
    if not segment.cluster_runs:
        return verdict.changes_at
    recheck = now + CLUSTER_RECHECK
    return recheck if verdict.changes_at is None else min(verdict.changes_at, recheck)


def _assignments(
    models: Mapping[str, ClusterModel | None], traits: Mapping[str, Any], now: datetime
) -> dict[str, int]:
    return {run: assign(model, traits, now) for run, model in models.items() if model is not None}


class MembershipEngine:
    """Evaluates, stores and announces memberships."""

    def __init__(self, *, consent: ConsentClient, naming: Naming, definitions: Definitions) -> None:
        self._consent = consent
        self._naming = naming
        self.definitions = definitions
        self._models: dict[str, ClusterModel | None] = {}

    async def evaluate(
        self,
        conn: Connection,
        targets: Targets,
        now: datetime,
        cause: Cause,
        *,
        consent: Mapping[tuple[str, str], bool] | None = None,
    ) -> Outcome:
        """Re-evaluate the targeted segments (and those referring to them) of each subject.

        ``consent`` overrides the consent client for (subject, purpose) pairs whose newest
        decision the caller holds in hand (the client's cache may not have seen it yet).
        """
        segments = await self.definitions.load(conn)
        wanted = self._expand(segments, targets)
        if not wanted:
            return Outcome()
        traits = await facts.lock(conn, wanted)
        subjects = sorted(traits)
        if not subjects:
            return Outcome()
        chosen = {
            s.segment_id for s in segments if any(s.segment_id in wanted[x] for x in subjects)
        }
        live = [s for s in segments if s.segment_id in chosen]
        events_by_subject = await self._events(conn, subjects, live, now)
        current = await memberships.of_subjects(conn, subjects)
        purposes = {s.purpose for s in live}
        answers = {
            pair: answer.allowed
            for pair, answer in (
                await self._consent.check_many((x, p) for x in subjects for p in purposes)
            ).items()
        }
        answers.update(consent or {})
        models = await self._cluster_models(conn, live)
        outcome = Outcome()
        entered_reason, exited_reason = _reasons(cause)
        due: list[tuple[str, str, datetime | None]] = []
        enters: list[Member] = []
        leaves: list[tuple[str, str]] = []
        for subject in subjects:
            held = current[subject]
            member_of = set(held)
            clusters = _assignments(models, traits[subject], now)
            for segment in live:
                if segment.segment_id not in wanted[subject]:
                    continue
                outcome.evaluated += 1
                allowed = answers.get((subject, segment.purpose), False)
                if allowed:
                    verdict = evaluate(
                        segment.rule,
                        SubjectFacts(
                            traits[subject],
                            events_by_subject.get(subject, []),
                            frozenset(member_of),
                            clusters,
                        ),
                        now,
                    )
                else:
                    verdict = Verdict(False, "no consent for " + segment.purpose, None)
                due.append((segment.segment_id, subject, _next_look(segment, verdict, now)))
                was = segment.segment_id in held
                if verdict.member:
                    member_of.add(segment.segment_id)
                else:
                    member_of.discard(segment.segment_id)
                if verdict.member and not was:
                    reason = entered_reason
                    enters.append(
                        Member(
                            segment.segment_id,
                            subject,
                            now,
                            reason,
                            verdict.reason,
                            segment.version,
                        )
                    )
                    outcome.changes.append(
                        Change(segment.segment_id, subject, True, reason, verdict.reason)
                    )
                elif was and not verdict.member:
                    reason = (
                        exited_reason if allowed else R.MEMBERSHIP_CHANGE_REASON_CONSENT_WITHDRAWN
                    )
                    leaves.append((segment.segment_id, subject))
                    outcome.changes.append(
                        Change(segment.segment_id, subject, False, reason, verdict.reason)
                    )
        await memberships.enter(conn, enters)
        await memberships.leave(conn, leaves)
        await facts.set_due(conn, due)
        await self.announce(conn, outcome.changes, {s.segment_id: s for s in live}, current, now)
        return outcome

    async def verdicts(
        self,
        conn: Connection,
        segment: LiveSegment,
        traits: Mapping[str, Mapping[str, Any]],
        now: datetime,
    ) -> dict[str, Verdict]:
        """``segment``'s verdict for each subject, read without locks and written nowhere
        (what a preview needs)."""
        subjects = sorted(traits)
        events_by_subject = await self._events(conn, subjects, [segment], now)
        current = await memberships.of_subjects(conn, subjects)
        models = await self._cluster_models(conn, [segment])
        return {
            subject: evaluate(
                segment.rule,
                SubjectFacts(
                    traits[subject],
                    events_by_subject.get(subject, []),
                    frozenset(current[subject]),
                    _assignments(models, traits[subject], now),
                ),
                now,
            )
            for subject in subjects
        }

    async def exit_all(
        self,
        conn: Connection,
        pairs: Sequence[tuple[str, str]],
        reason: int,
        now: datetime,
        explanation: str,
    ) -> int:
        """Remove (segment, subject) memberships outright (deletion, erasure of a merged id)."""
        if not pairs:
            return 0
        subjects = sorted({s for _, s in pairs})
        current = await memberships.of_subjects(conn, subjects)
        present = [(g, s) for g, s in pairs if g in current[s]]
        await memberships.leave(conn, present)
        await facts.set_due(conn, [(g, s, None) for g, s in present])
        segments = {}
        for segment_id in {g for g, _ in present}:
            stored = await definitions.get(conn, segment_id)
            if stored is not None:
                segments[segment_id] = stored
        changes = [Change(g, s, False, reason, explanation) for g, s in present]
        await self.announce(conn, changes, segments, current, now)
        return len(present)

    async def announce(
        self,
        conn: Connection,
        changes: Sequence[Change],
        segments: Mapping[str, Any],
        current: Mapping[str, Mapping[str, Member]],
        now: datetime,
    ) -> None:
        """SegmentEntered / SegmentExited for each change, through the outbox."""
        messages: list[OutboundMessage] = []
        for change in changes:
            segment = segments[change.segment_id]
            version, purpose = segment.version, segment.purpose
            if change.entered:
                payload: Any = events.SegmentEntered(
                    segment_id=change.segment_id,
                    segment_version=version,
                    subject_id=change.subject_id,
                    reason=change.reason,  # type: ignore[arg-type]
                    explanation=change.explanation,
                    entered_at=timestamp(now),
                    purpose=purpose,
                )
                field_name, kind = "segment_entered", "entered"
            else:
                payload = events.SegmentExited(
                    segment_id=change.segment_id,
                    segment_version=version,
                    subject_id=change.subject_id,
                    reason=change.reason,  # type: ignore[arg-type]
                    explanation=change.explanation,
                    exited_at=timestamp(now),
                    entered_at=timestamp(current[change.subject_id][change.segment_id].entered_at),
                    purpose=purpose,
                )
                field_name, kind = "segment_exited", "exited"
            message = envelope(
                source="tailor://segment",
                event_type=f"tailor.segment.v1.{kind}",
                subject=change.subject_id,
                payload_field=field_name,
                payload=payload,
                time=now,
            )
            messages.append(
                outbound(
                    message,
                    self._naming.segment_subject(change.segment_id, change.subject_id, kind),
                )
            )
        if messages:
            await enqueue(conn, messages)

    @staticmethod
    def _expand(segments: Sequence[LiveSegment], targets: Targets) -> dict[str, frozenset[str]]:
        every = frozenset(s.segment_id for s in segments)
        expanded = {}
        for subject, selector in targets.items():
            if selector is None:
                found = every
            else:
                found = with_dependents(segments, (s.segment_id for s in segments if selector(s)))
            if found:
                expanded[subject] = found
        return expanded

    @staticmethod
    async def _events(
        conn: Connection, subjects: Sequence[str], live: Sequence[LiveSegment], now: datetime
    ) -> dict[str, list[Any]]:
        needing = [s for s in live if s.needs_events]
        if not needing:
            return {}
        lookbacks = [s.lookback for s in needing]
        since = None if any(b is None for b in lookbacks) else now - max(b for b in lookbacks if b)
        return await facts.events_of(conn, subjects, since)

    async def _cluster_models(
        self, conn: Connection, live: Sequence[LiveSegment]
    ) -> dict[str, ClusterModel | None]:
        runs = {run for s in live for run in s.cluster_runs}
        for run in runs - set(self._models):
            stored = await conn.fetchval(
                "SELECT model FROM cluster_runs WHERE run_id = $1 AND state = 'COMPLETED'", run
            )
            if stored:  # a completed run's model never changes, so it is kept for good
                self._models[run] = ClusterModel.from_json(stored)
        return {run: self._models.get(run) for run in runs}
