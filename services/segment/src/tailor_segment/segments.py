"""Segment commands: create, update (versioned), delete, validate and preview rules.

The handlers know nothing of gRPC: they take plain values, raise tailor_core.errors on bad
input, and leave membership to the engine and the backfill loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from tailor.events.v1 import platform_events_pb2 as events
from tailor.segment.v1 import rules_pb2
from tailor_core.consent_client import ConsentClient
from tailor_core.db import Connection
from tailor_core.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from tailor_segment.adapters import definitions, facts
from tailor_segment.adapters.definitions import StoredSegment
from tailor_segment.domain import rules
from tailor_segment.domain.rule_text import RuleSyntaxError, parse, render
from tailor_segment.membership import MembershipEngine, live_segment

SEGMENT_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_PURPOSE = "marketing"
MAX_RULE_TEXT = 10_000
MAX_NAME = 200
MAX_DESCRIPTION = 2_000
PREVIEW_PAGE = 500


@dataclass(frozen=True, slots=True)
class RuleInput:
    """A rule as the caller gave it: the protobuf form, or the text form."""

    proto: rules_pb2.Rule | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class CheckedRule:
    rule: rules.Rule
    text: str
    proto: rules_pb2.Rule

    @property
    def stored(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class RuleProblem:
    path: str
    line: int
    column: int
    message: str


def read_rule(given: RuleInput, field_name: str = "rule") -> CheckedRule:
    """The rule in canonical form; InvalidArgument pointing at its offending part."""
    if given.text is not None:
        if len(given.text) > MAX_RULE_TEXT:
            raise InvalidArgument(
                "rule text too long",
                [
                    FieldViolation(
                        f"{field_name}.text", f"at most {MAX_RULE_TEXT} characters", "TOO_LONG"
                    )
                ],
            )
        try:
            rule = parse(given.text)
        except RuleSyntaxError as error:
            raise InvalidArgument(
                f"rule text: {error.message}",
                [
                    FieldViolation(
                        f"{field_name}.text",
                        f"{error.line}:{error.column}: {error.description}",
                        "RULE_SYNTAX",
                    )
                ],
            ) from None
        rules.validate(rule, f"{field_name}.text")
    elif given.proto is not None:
        rule = rules.from_proto(given.proto, f"{field_name}.rule")
    else:
        raise InvalidArgument(
            "a rule is required",
            [FieldViolation(field_name, "give the rule's protobuf or text form", "REQUIRED")],
        )
    return CheckedRule(rule, render(rule), rules.to_proto(rule))


def rule_problems(given: RuleInput) -> tuple[CheckedRule | None, list[RuleProblem]]:
    """For ValidateRule: the canonical rule, or every problem found (not an error)."""
    try:
        return read_rule(given, "rule"), []
    except RuleSyntaxError as error:  # pragma: no cover - read_rule converts it
        return None, [RuleProblem("", error.line, error.column, error.description)]
    except InvalidArgument as error:
        problems = []
        for violation in error.field_violations:
            if violation.reason == "RULE_SYNTAX":
                position, _, message = violation.description.partition(": ")
                line, _, column = position.partition(":")
                problems.append(RuleProblem("", int(line), int(column), message))
            else:
                path = violation.field.removeprefix("rule.rule").removeprefix("rule.text")
                problems.append(RuleProblem(path.removeprefix("."), 0, 0, violation.description))
        return None, problems


def _check_segment_id(segment_id: str, field_name: str = "segment_id") -> None:
    if not SEGMENT_ID.fullmatch(segment_id):
        raise InvalidArgument(
            "bad segment id",
            [
                FieldViolation(
                    field_name,
                    "1..64 characters: lower-case letters, digits, '-' and '_'",
                    "BAD_ID",
                )
            ],
        )


def _check_name(name: str, field_name: str = "name") -> None:
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidArgument(
            "bad name", [FieldViolation(field_name, f"1..{MAX_NAME} characters", "BAD_NAME")]
        )


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(
            "description too long",
            [FieldViolation("description", f"at most {MAX_DESCRIPTION} characters", "TOO_LONG")],
        )


async def check_purpose(consent: ConsentClient, purpose: str, field_name: str = "purpose") -> None:
    """The purpose must be one the consent service knows (it answers an unknown one with
    invalid_request); no answer at all is UNAVAILABLE (fail closed)."""
    if not PURPOSE.fullmatch(purpose):
        raise InvalidArgument(
            "bad purpose", [FieldViolation(field_name, "a purpose name", "BAD_PURPOSE")]
        )
    answer = await consent.check("segment-purpose-probe", purpose)
    if answer.reason == "invalid_request":
        raise InvalidArgument(
            f"unknown purpose {purpose!r}",
            [FieldViolation(field_name, "not a registered purpose", "UNKNOWN_PURPOSE")],
        )
    if answer.reason == "consent_unavailable":
        raise Unavailable("consent cannot be checked now; retry")


async def _check_references(
    conn: Connection, checked: CheckedRule, segment_id: str, field_name: str
) -> tuple[str, ...]:
    """Referenced segments exist and are live, no reference closes a cycle, and referenced
    cluster runs have completed with that cluster."""
    references = tuple(sorted(rules.referenced_segments(checked.rule)))
    problems = []
    for ref in references:
        stored = await definitions.get(conn, ref)
        if stored is None or stored.state == "DELETED":
            problems.append(
                FieldViolation(field_name, f"refers to unknown segment {ref!r}", "UNKNOWN_SEGMENT")
            )
        elif ref == segment_id or await _reaches(conn, ref, segment_id):
            problems.append(
                FieldViolation(field_name, f"referring to {ref!r} forms a cycle", "CYCLE")
            )
    for node in rules.nodes(checked.rule):
        if isinstance(node, rules.ClusterAssignment):
            k = await conn.fetchval(
                "SELECT k FROM cluster_runs WHERE run_id = $1 AND state = 'COMPLETED'",
                node.run_id,
            )
            if k is None or node.cluster_id >= k:
                problems.append(
                    FieldViolation(
                        field_name,
                        f"no cluster {node.cluster_id} in a completed run {node.run_id!r}",
                        "UNKNOWN_CLUSTER",
                    )
                )
    if problems:
        raise InvalidArgument(problems[0].description, problems)
    return references


async def _reaches(conn: Connection, start: str, target: str) -> bool:
    """Whether ``start``'s rule refers to ``target``, directly or through others."""
    seen, frontier = set(), [start]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        stored = await definitions.get(conn, current)
        if stored is None:
            continue
        if target in stored.references:
            return True
        frontier.extend(stored.references)
    return False


@dataclass
class Preview:
    size: int = 0
    sample: list[str] = field(default_factory=list)
    excluded_without_consent: int = 0
    population: int = 0
    rule_text: str = ""


class SegmentCommands:
    def __init__(
        self,
        pool: asyncpg.Pool,
        engine: MembershipEngine,
        consent: ConsentClient,
        *,
        on_new_version: Callable[[], None],
    ) -> None:
        self._pool = pool
        self._engine = engine
        self._consent = consent
        self._on_new_version = on_new_version

    async def create(
        self,
        *,
        segment_id: str,
        name: str,
        description: str,
        rule: RuleInput,
        purpose: str,
        created_by: str,
        promoted_from: tuple[str, int] | None = None,
    ) -> StoredSegment:
        _check_segment_id(segment_id)
        _check_name(name)
        _check_description(description)
        checked = read_rule(rule)
        purpose = purpose or DEFAULT_PURPOSE
        await check_purpose(self._consent, purpose)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            references = await _check_references(conn, checked, segment_id, "rule")
            if await definitions.exists(conn, segment_id):
                raise AlreadyExists(
                    f"segment {segment_id!r} exists (ids of deleted segments are not reused)",
                    [FieldViolation("segment_id", "taken", "ALREADY_EXISTS")],
                )
            segment = StoredSegment(
                segment_id=segment_id,
                version=1,
                state="BACKFILLING",
                name=name,
                description=description,
                rule=checked.stored,
                rule_text=checked.text,
                purpose=purpose,
                references=references,
                created_at=now,
                updated_at=now,
                updated_by=created_by,
                current_version=1,
                promoted_run=promoted_from[0] if promoted_from else None,
                promoted_cluster=promoted_from[1] if promoted_from else None,
            )
            await definitions.create(conn, segment)
        self._on_new_version()
        return segment

    async def update(
        self,
        *,
        segment_id: str,
        expected_version: int,
        name: str,
        description: str | None,
        rule: RuleInput | None,
        purpose: str,
        updated_by: str,
    ) -> StoredSegment:
        _check_segment_id(segment_id)
        if name:
            _check_name(name)
        if description is not None:
            _check_description(description)
        checked = read_rule(rule) if rule is not None else None
        if purpose:
            await check_purpose(self._consent, purpose)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await definitions.get(conn, segment_id, lock=True)
            if current is None or current.state == "DELETED":
                raise NotFound(f"no segment {segment_id!r}")
            if expected_version and expected_version != current.version:
                raise Aborted(
                    f"segment {segment_id!r} is at version {current.version}, not "
                    f"{expected_version}: read it again",
                    [FieldViolation("expected_version", "not the current version", "STALE")],
                )
            references = current.references
            if checked is not None:
                references = await _check_references(conn, checked, segment_id, "rule")
            redefined = (checked is not None and checked.stored != current.rule) or (
                bool(purpose) and purpose != current.purpose
            )
            segment = StoredSegment(
                segment_id=segment_id,
                version=current.version + 1,
                state="BACKFILLING" if redefined else current.state,
                name=name or current.name,
                description=current.description if description is None else description,
                rule=checked.stored if checked else current.rule,
                rule_text=checked.text if checked else current.rule_text,
                purpose=purpose or current.purpose,
                references=references,
                created_at=current.created_at,
                updated_at=now,
                updated_by=updated_by,
                current_version=current.version + 1,
                promoted_run=current.promoted_run,
                promoted_cluster=current.promoted_cluster,
            )
            await definitions.add_version(conn, segment)
            await definitions.set_current(
                conn, segment_id, segment.version, segment.state, segment.purpose, now
            )
        if redefined:
            self._on_new_version()
        return segment

    async def delete(self, segment_id: str) -> int:
        _check_segment_id(segment_id)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await definitions.get(conn, segment_id, lock=True)
            if current is None or current.state == "DELETED":
                raise NotFound(f"no segment {segment_id!r}")
            referring = await definitions.referring_to(conn, segment_id)
            if referring:
                raise FailedPrecondition(
                    f"segments {', '.join(referring)} refer to {segment_id!r}; change them first",
                    [FieldViolation("segment_id", "referred to by other segments", "IN_USE")],
                    metadata={"referring_segment_ids": ",".join(referring)},
                )
            members = await conn.fetch(
                "SELECT subject_id FROM memberships WHERE segment_id = $1", segment_id
            )
            exited = await self._engine.exit_all(
                conn,
                [(segment_id, row["subject_id"]) for row in members],
                events.MEMBERSHIP_CHANGE_REASON_SEGMENT_DELETED,
                now,
                "segment deleted",
            )
            await conn.execute("DELETE FROM evaluations_due WHERE segment_id = $1", segment_id)
            await definitions.mark_deleted(conn, segment_id, now)
        return exited

    async def preview(
        self, rule: RuleInput, purpose: str, sample_size: int, deadline: float | None
    ) -> Preview:
        """Size and a sample of ``rule`` over every known subject, nothing saved."""
        if not 0 <= sample_size <= 100:
            raise InvalidArgument(
                "sample size out of range",
                [FieldViolation("sample_size", "0..100", "OUT_OF_RANGE")],
            )
        checked = read_rule(rule)
        purpose = purpose or DEFAULT_PURPOSE
        await check_purpose(self._consent, purpose)
        candidate = live_segment(
            StoredSegment(
                "preview",
                0,
                "ACTIVE",
                "",
                "",
                checked.stored,
                checked.text,
                purpose,
                (),
                datetime.now(UTC),
                datetime.now(UTC),
                "",
                0,
            )
        )
        found = Preview(rule_text=checked.text)
        now = datetime.now(UTC)
        after: str | None = None
        async with self._pool.acquire() as conn:
            await _check_references(conn, checked, "", "rule")
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceeded("the preview took longer than the call's deadline")
                page = await facts.traits_page(conn, after, PREVIEW_PAGE)
                if not page:
                    break
                after = page[-1][0]
                subjects = [subject for subject, _, _ in page]
                answers = await self._consent.check_many((s, purpose) for s in subjects)
                verdicts = await self._engine.verdicts(
                    conn, candidate, {s: t for s, t, _ in page}, now
                )
                for subject in subjects:
                    allowed = answers[(subject, purpose)].allowed
                    found.population += allowed
                    if not verdicts[subject].member:
                        continue
                    if not allowed:
                        found.excluded_without_consent += 1
                        continue
                    found.size += 1
                    if len(found.sample) < sample_size:
                        found.sample.append(subject)
        return found
