"""Evaluating a segment rule for one subject at a moment, and when the answer next changes.

Every time-dependent leaf is a step function of the clock: it can only change at known
moments (an event entering or leaving a window, a sequence's time running out, a timestamp
trait crossing a duration). A leaf's ``changes_at`` is the first such moment at which its
result really differs; a composite takes the earliest of its children's, which is never
later than its own next change. With no new facts, nothing changes strictly before
``changes_at``, so the segment clock can sleep until then.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tailor.events.v1 import events_pb2
from tailor_segment.domain import rules as r
from tailor_segment.domain.rule_text import format_comparison, format_duration, format_operand
from tailor_segment.domain.rules import Op, parse_timestamp


@dataclass(frozen=True, slots=True)
class EventFact:
    """One customer event as rules see it: its name ("Order Completed", or the call kind
    "page", "identify" ...), when it happened, and its non-personal fields by dotted path.
    A path under a repeated field (an order's products) holds a list."""

    name: str
    at: datetime
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What is known of one subject: flat non-personal traits, events, the segments it is
    in and its cluster per discovery run."""

    traits: Mapping[str, Any]
    events: Sequence[EventFact]
    segments: frozenset[str] = frozenset()
    clusters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the subject is a member, why (short human text), and the earliest future
    moment at which the answer can change without new facts (None: never)."""

    member: bool
    reason: str
    changes_at: datetime | None


def evaluate(rule: r.Rule, facts: SubjectFacts, now: datetime) -> Verdict:
    """The verdict of ``rule`` for ``facts`` at ``now`` (an aware datetime)."""
    match rule:
        case r.All(rules=children) | r.Any(rules=children):
            verdicts = [evaluate(child, facts, now) for child in children]
            return _combine(isinstance(rule, r.All), verdicts)
        case r.Not(rule=child):
            inner = evaluate(child, facts, now)
            return Verdict(not inner.member, inner.reason, inner.changes_at)
        case r.TraitComparison():
            return _trait(rule, facts.traits, now)
        case r.EventCondition():
            return _event_condition(rule, facts.events, now)
        case r.EventAbsence():
            return _event_absence(rule, facts.events, now)
        case r.EventSequence():
            return _event_sequence(rule, facts.events, now)
        case r.SegmentReference():
            member = rule.segment_id in facts.segments
            text = f"segment {json.dumps(rule.segment_id, ensure_ascii=False)}"
            return Verdict(member, ("in " if member else "not in ") + text, None)
        case r.ClusterAssignment():
            member = facts.clusters.get(rule.run_id) == rule.cluster_id
            text = f"cluster {rule.cluster_id} of run {json.dumps(rule.run_id)}"
            return Verdict(member, ("in " if member else "not in ") + text, None)
    raise TypeError(f"not a rule: {rule!r}")


def _combine(conjunction: bool, verdicts: list[Verdict]) -> Verdict:
    members = [v.member for v in verdicts]
    member = all(members) if conjunction else any(members)
    deciding = [v.reason for v in verdicts if v.member == member]
    if member == conjunction:  # all true under AND, all false under OR: every child counts
        reason = (" and " if conjunction else "; ").join(deciding)
    else:  # the first child that decided it
        reason = deciding[0]
    moments = [v.changes_at for v in verdicts if v.changes_at is not None]
    return Verdict(member, reason, min(moments, default=None))


def _first_change(
    truth: Callable[[datetime], bool], moments: Iterable[datetime], now: datetime
) -> datetime | None:
    """The first of ``moments`` after ``now`` at which ``truth`` differs from now's."""
    current = truth(now)
    for moment in sorted({m for m in moments if m > now}):
        if truth(moment) != current:
            return moment
    return None


def _shifted(moment: datetime, by: timedelta) -> datetime | None:
    try:
        return moment + by
    except OverflowError:
        return None


# --- comparisons -------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return parse_timestamp(value) if isinstance(value, str) else None


def _equal(actual: object, expected: object) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if _is_number(actual) and _is_number(expected):
        return actual == expected
    return isinstance(actual, str) and isinstance(expected, str) and actual == expected


def _ordered(op: Op, actual: object, expected: object) -> bool:
    left: Any
    right: Any
    if _is_number(actual) and _is_number(expected):
        left, right = actual, expected
    else:
        left, right = _moment(actual), _moment(expected) if isinstance(expected, str) else None
        if left is None or right is None:
            return False
    if op == Op.GT:
        return bool(left > right)
    if op == Op.GE:
        return bool(left >= right)
    if op == Op.LT:
        return bool(left < right)
    return bool(left <= right)


def _scalar_holds(
    op: Op, actual: object, operand: r.Operand, duration: timedelta | None, reference: datetime
) -> bool:
    if op == Op.EQ:
        return _equal(actual, operand)
    if op == Op.IN:
        return isinstance(operand, tuple) and any(_equal(actual, o) for o in operand)
    if op == Op.CONTAINS:
        return isinstance(actual, str) and isinstance(operand, str) and operand in actual
    if op == Op.STARTS_WITH:
        return isinstance(actual, str) and isinstance(operand, str) and actual.startswith(operand)
    if op in r.ORDER_OPS:
        return _ordered(op, actual, operand)
    moment = _moment(actual)
    if moment is None or duration is None:
        return False
    if op == Op.WITHIN_LAST:
        return reference - duration < moment <= reference
    return moment <= reference - duration  # BEFORE_LAST


_NEGATIONS = {Op.NE: Op.EQ, Op.NOT_IN: Op.IN, Op.NOT_EXISTS: Op.EXISTS}


def holds(
    op: Op, actual: object, operand: r.Operand, duration: timedelta | None, reference: datetime
) -> bool:
    """Whether ``actual`` (None or an empty list when absent) satisfies ``op operand``;
    WITHIN_LAST / BEFORE_LAST measure back from ``reference``. A list holds when any
    element does (CONTAINS: when an element equals the operand); NE, NOT_IN and NOT_EXISTS
    are the negations of EQ, IN and EXISTS, so they hold when the value is absent."""
    if op in _NEGATIONS:
        return not holds(_NEGATIONS[op], actual, operand, duration, reference)
    present = actual is not None and actual != []
    if op == Op.EXISTS:
        return present
    if op == Op.EQ and operand is None:
        return not present
    if not present:
        return False
    if isinstance(actual, list | tuple):
        if op == Op.CONTAINS:
            return any(_equal(item, operand) for item in actual)
        return any(_scalar_holds(op, item, operand, duration, reference) for item in actual)
    return _scalar_holds(op, actual, operand, duration, reference)


def _show(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, str | bool) or value is None:
        return format_operand(value)
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
        return format_operand(number) if math.isfinite(number) else str(value)
    return str(value)


def _trait(rule: r.TraitComparison, traits: Mapping[str, Any], now: datetime) -> Verdict:
    actual = traits.get(rule.trait)
    member = holds(rule.op, actual, rule.value, rule.duration, now)
    wanted = format_comparison(rule.op, rule.value, rule.duration)
    shown = "absent" if actual is None or actual == [] else f"= {_show(actual)}"
    reason = f"{rule.trait} {shown} {wanted}" if member else f"{rule.trait} {shown}, not {wanted}"
    changes_at = None
    if rule.op in r.DURATION_OPS and rule.duration is not None:
        items = actual if isinstance(actual, list | tuple) else [actual]
        starts = [m for m in map(_moment, items) if m is not None]
        moments = [*starts, *(e for m in starts if (e := _shifted(m, rule.duration)))]

        def truth(moment: datetime) -> bool:
            return holds(rule.op, actual, rule.value, rule.duration, moment)

        changes_at = _first_change(truth, moments, now)
    return Verdict(member, reason, changes_at)


# --- events ------------------------------------------------------------------------------


def matches(fact: EventFact, matcher: r.EventMatcher) -> bool:
    """Whether the event is one the matcher counts. Duration filters measure back from the
    event's own time, so that whether an event matches never changes with the clock."""
    return fact.name == matcher.event and all(
        holds(f.op, fact.fields.get(f.property), f.value, f.duration, fact.at)
        for f in matcher.filters
    )


def _matching(events: Sequence[EventFact], matcher: r.EventMatcher) -> list[EventFact]:
    return sorted((e for e in events if matches(e, matcher)), key=lambda e: e.at)


class _Timeline:
    """Matching events sorted by time, to count or sum those in a window at any moment."""

    def __init__(self, events: list[EventFact], window: timedelta | None) -> None:
        self.events = events
        self.times = [e.at for e in events]
        self.window = window

    def in_window(self, moment: datetime) -> list[EventFact]:
        """Events with ``moment - window < at <= moment``."""
        high = bisect_right(self.times, moment)
        low = 0 if self.window is None else bisect_right(self.times, moment - self.window)
        return self.events[low:high]

    def moments(self) -> list[datetime]:
        """When an event enters or leaves the window."""
        found = list(self.times)
        if self.window is not None:
            found += [
                t for t in map(lambda t: _shifted(t, self.window or timedelta(0)), self.times) if t
            ]
        return found


def _summed(fact: EventFact, path: str) -> float:
    value = fact.fields.get(path)
    items = value if isinstance(value, list | tuple) else [value]
    return math.fsum(float(item) for item in items if _is_number(item))  # type: ignore[arg-type]


def _window_text(window: timedelta | None) -> str:
    return f" within {format_duration(window)}" if window is not None else ""


def _event_condition(rule: r.EventCondition, events: Sequence[EventFact], now: datetime) -> Verdict:
    timeline = _Timeline(_matching(events, rule.match), rule.window)

    def aggregate(moment: datetime) -> float:
        counted = timeline.in_window(moment)
        if rule.aggregate == r.Aggregate.COUNT:
            return float(len(counted))
        return math.fsum(_summed(e, rule.property or "") for e in counted)

    def truth(moment: datetime) -> bool:
        return holds(rule.op, aggregate(moment), rule.threshold, None, moment)

    value = aggregate(now)
    member = holds(rule.op, value, rule.threshold, None, now)
    name = json.dumps(rule.match.event, ensure_ascii=False)
    what = (
        f"count of {name}"
        if rule.aggregate == r.Aggregate.COUNT
        else (f"sum of {rule.property} over {name}")
    )
    wanted = format_comparison(rule.op, rule.threshold, None) + _window_text(rule.window)
    reason = (
        f"{what} = {_show(value)} {wanted}" if member else f"{what} = {_show(value)}, not {wanted}"
    )
    return Verdict(member, reason, _first_change(truth, timeline.moments(), now))


def _event_absence(rule: r.EventAbsence, events: Sequence[EventFact], now: datetime) -> Verdict:
    timeline = _Timeline(_matching(events, rule.match), rule.window)

    def truth(moment: datetime) -> bool:
        return not timeline.in_window(moment)

    present = timeline.in_window(now)
    name = json.dumps(rule.match.event, ensure_ascii=False)
    window = _window_text(rule.window)
    latest = f"{name} at {present[-1].at.isoformat()}" if present else f"no {name}"
    reason = latest + window
    return Verdict(not present, reason, _first_change(truth, timeline.moments(), now))


def _values(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _correlated(first: EventFact, then: EventFact, paths: Sequence[str]) -> bool:
    """Every path has a value common to both events."""
    return all(
        any(_equal(a, b) for a in _values(first.fields.get(p)) for b in _values(then.fields.get(p)))
        for p in paths
    )


def _event_sequence(rule: r.EventSequence, events: Sequence[EventFact], now: datetime) -> Verdict:
    firsts = _matching(events, rule.first)
    thens = _matching(events, rule.then)
    # Each first event makes the rule hold over one interval of time [start, end).
    intervals: list[tuple[datetime, datetime | None, EventFact, EventFact | None]] = []
    for first in firsts:
        deadline = _shifted(first.at, rule.within)
        followers = [
            then
            for then in thens
            if then is not first
            and first.at <= then.at
            and (deadline is None or then.at <= deadline)
            and _correlated(first, then, rule.correlate_on)
        ]
        end = _shifted(first.at, rule.window) if rule.window is not None else None
        if rule.then_absent:
            if not followers and deadline is not None:
                # Abandoned, until a late B settles it (the cart bought after all).
                late = [
                    then.at
                    for then in thens
                    if then.at > deadline and _correlated(first, then, rule.correlate_on)
                ]
                if late:
                    end = min(late) if end is None else min(end, min(late))
                intervals.append((deadline, end, first, None))
        elif followers:
            intervals.append((followers[0].at, end, first, followers[0]))
    intervals = [i for i in intervals if i[1] is None or i[0] < i[1]]

    def holding(
        moment: datetime,
    ) -> list[tuple[datetime, datetime | None, EventFact, EventFact | None]]:
        return [i for i in intervals if i[0] <= moment and (i[1] is None or moment < i[1])]

    def truth(moment: datetime) -> bool:
        return bool(holding(moment))

    moments = [i[0] for i in intervals] + [i[1] for i in intervals if i[1] is not None]
    now_holding = holding(now)
    first_name = json.dumps(rule.first.event, ensure_ascii=False)
    then_name = json.dumps(rule.then.event, ensure_ascii=False)
    within = format_duration(rule.within)
    if now_holding:
        _, _, first, then = now_holding[-1]
        if then is None:
            reason = (
                f"{first_name} at {first.at.isoformat()} not followed by {then_name} "
                f"within {within}"
            )
        else:
            reason = (
                f"{first_name} at {first.at.isoformat()} then {then_name} at "
                f"{then.at.isoformat()} within {within}"
            )
    elif rule.then_absent:
        reason = f"no {first_name} left without {then_name} for {within}"
    else:
        reason = f"no {first_name} then {then_name} within {within}"
    return Verdict(bool(now_holding), reason, _first_change(truth, moments, now))


# --- building facts from customer events ---------------------------------------------------

_PERSONAL_TYPES = frozenset({"tailor.common.v1.PersonalField", "tailor.common.v1.EncryptedField"})
#: Where typed payload fields land: a product event's product and an order's line items both
#: read as product.*, so that one path (product.product_id) works for views, carts and orders.
_RENAMED = {"product.product": "product", "order.products": "product"}
#: Plain identifiers of a person, kept out of rules like the personal fields.
_HIDDEN = frozenset({"alias.previous_id"})
#: Fields whose zero value means something (no search results, opened from cold).
_ZERO_MEANINGFUL: dict[str, dict[str, Any]] = {
    "search": {"search.results": 0},
    "app": {"app.from_background": False},
}


def _enum_name(field_descriptor: FieldDescriptor, number: int) -> str:
    enum_type = field_descriptor.enum_type
    assert enum_type is not None
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.name).upper() + "_"
    value = enum_type.values_by_number.get(number)
    return value.name.removeprefix(prefix).lower() if value is not None else str(number)


def _put_json(out: dict[str, Any], path: str, value: object) -> None:
    """A Struct's content (as JSON values) under ``path``; lists of objects become a list
    per path, like repeated messages."""
    if isinstance(value, dict):
        for key, item in value.items():
            _put_json(out, f"{path}.{key}", item)
    elif isinstance(value, list):
        for item in value:
            element: dict[str, Any] = {}
            _put_json(element, path, item)
            _merge_as_lists(out, element)
    elif value is not None:
        out[path] = value


def _merge_as_lists(out: dict[str, Any], element: Mapping[str, Any]) -> None:
    for key, item in element.items():
        values = out.setdefault(key, [])
        if not isinstance(values, list):
            values = out[key] = [values]
        values.extend(item if isinstance(item, list) else [item])


def _flatten(message: Message, prefix: str, out: dict[str, Any]) -> None:
    for descriptor, value in message.ListFields():
        path = f"{prefix}.{descriptor.name}"
        path = _RENAMED.get(path, path)
        message_type = descriptor.message_type
        if path in _HIDDEN or (message_type and message_type.full_name in _PERSONAL_TYPES):
            continue
        if message_type is not None and message_type.GetOptions().map_entry:
            if message_type.fields_by_name["value"].message_type is None:  # not personal
                for key, item in value.items():
                    out[f"{path}.{key}"] = item
        elif message_type is not None and message_type.full_name == "tailor.common.v1.Money":
            _put_money(value, path, out)
        elif message_type is not None and message_type.full_name == "google.protobuf.Struct":
            _put_json(out, path, json_format.MessageToDict(value))
        elif message_type is not None and descriptor.is_repeated:
            for item in value:
                element: dict[str, Any] = {}
                _flatten(item, path, element)
                _merge_as_lists(out, element)
        elif message_type is not None:
            _flatten(value, path, out)
        elif descriptor.enum_type is not None:
            numbers: list[int] = list(value) if descriptor.is_repeated else [value]
            names = [_enum_name(descriptor, n) for n in numbers]
            out[path] = names if descriptor.is_repeated else names[0]
        else:
            out[path] = list(value) if descriptor.is_repeated else value


def _put_money(money: Message, path: str, out: dict[str, Any]) -> None:
    amount = getattr(money, "amount", "")
    try:
        number = float(amount)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        out[f"{path}.amount"] = number
    if getattr(money, "currency", ""):
        out[f"{path}.currency"] = money.currency  # type: ignore[attr-defined]


def event_fact(event: events_pb2.CustomerEvent) -> EventFact | None:
    """The rule-facing view of a customer event: no personal field ever reaches it. None
    for an event without a kind, a time or (for track) a name."""
    kind = event.WhichOneof("kind")
    if kind is None or not event.HasField("timestamp"):
        return None
    fields: dict[str, Any] = {}
    if kind == "track":
        name = event.track.event
        if not name:
            return None
        payload = event.track.WhichOneof("payload")
        if payload is not None:
            fields.update(_ZERO_MEANINGFUL.get(payload, {}))
            _flatten(getattr(event.track, payload), payload, fields)
    else:
        name = kind
        _flatten(getattr(event, kind), kind, fields)
    if event.HasField("context"):
        _flatten(event.context, "context", fields)
    if event.HasField("properties"):
        _put_json(fields, "properties", json_format.MessageToDict(event.properties))
    at = event.timestamp.ToDatetime(tzinfo=UTC)
    return EventFact(name, at, fields)
