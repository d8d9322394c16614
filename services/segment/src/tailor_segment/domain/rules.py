"""The segment rule tree (tailor.segment.v1.Rule) as frozen dataclasses.

``from_proto`` is the one place a rule is validated: it collects every problem with the
protobuf path of the offending field (``rule.all.rules[1].event.window``) and raises
InvalidArgument. The text form is validated by converting to the protobuf form and back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from google.protobuf import duration_pb2, struct_pb2

from tailor.common.v1 import common_pb2
from tailor.segment.v1 import rules_pb2
from tailor_core.errors import FieldViolation, InvalidArgument

MAX_CHILDREN = 50
MAX_FILTERS = 20
MAX_DEPTH = 10
MAX_IN_VALUES = 1000
MAX_CORRELATE_ON = 5
MAX_NAME_LENGTH = 200
#: Longest event window or sequence time; it bounds how much history the service keeps.
MAX_WINDOW = timedelta(days=400)
#: Longest operand of WITHIN_LAST / BEFORE_LAST (a trait such as a signup date).
MAX_OPERAND_DURATION = timedelta(days=36500)

TRAIT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
EVENT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")
#: First segments of the paths event_fact produces (see evaluation.event_fact).
EVENT_PATH_ROOTS = frozenset(
    {
        "product",
        "order",
        "support",
        "social",
        "search",
        "app",
        "identify",
        "page",
        "screen",
        "group",
        "properties",
        "context",
    }
)
#: Paths (and everything under them) holding personal data: the PersonalField fields of
#: events.proto, plus the plain identifier of an alias.
PERSONAL_EVENT_PATHS = frozenset(
    {
        "identify.email",
        "identify.name",
        "identify.first_name",
        "identify.last_name",
        "identify.phone",
        "identify.address",
        "identify.birthday",
        "identify.personal_traits",
        "personal_properties",
        "context.ip",
        "context.user_agent",
        "context.precise_location",
        "context.device_id",
        "support.transcript",
        "social.comment",
        "search.query",
        "alias.previous_id",
    }
)


class Op(StrEnum):
    """tailor.common.v1.Comparison without its prefix."""

    EQ = "EQ"
    NE = "NE"
    GT = "GT"
    GE = "GE"
    LT = "LT"
    LE = "LE"
    IN = "IN"
    NOT_IN = "NOT_IN"
    CONTAINS = "CONTAINS"
    STARTS_WITH = "STARTS_WITH"
    EXISTS = "EXISTS"
    NOT_EXISTS = "NOT_EXISTS"
    WITHIN_LAST = "WITHIN_LAST"
    BEFORE_LAST = "BEFORE_LAST"


NUMERIC_OPS = frozenset({Op.EQ, Op.NE, Op.GT, Op.GE, Op.LT, Op.LE})
ORDER_OPS = frozenset({Op.GT, Op.GE, Op.LT, Op.LE})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
PRESENCE_OPS = frozenset({Op.EXISTS, Op.NOT_EXISTS})
DURATION_OPS = frozenset({Op.WITHIN_LAST, Op.BEFORE_LAST})


class Aggregate(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"


#: An operand: a scalar (None is JSON null, only with EQ / NE), or a list for IN / NOT_IN.
#: Numbers are floats, as google.protobuf.Value holds them.
Scalar = str | float | bool | None
Operand = Scalar | tuple[str | float | bool, ...]


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """``property op value``; ``value`` is None for EXISTS and the duration operators."""

    property: str
    op: Op
    value: Operand = None
    duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class EventMatcher:
    event: str
    filters: tuple[PropertyFilter, ...] = ()


@dataclass(frozen=True, slots=True)
class TraitComparison:
    trait: str
    op: Op
    value: Operand = None
    duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class EventCondition:
    """Count (or sum of ``property``) of matching events in ``window`` compared with a
    threshold; ``window`` None means the whole lifetime."""

    match: EventMatcher
    aggregate: Aggregate
    op: Op
    threshold: float
    property: str | None = None
    window: timedelta | None = None


@dataclass(frozen=True, slots=True)
class EventAbsence:
    match: EventMatcher
    window: timedelta


@dataclass(frozen=True, slots=True)
class EventSequence:
    first: EventMatcher
    then: EventMatcher
    within: timedelta
    then_absent: bool = False
    window: timedelta | None = None
    correlate_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SegmentReference:
    segment_id: str


@dataclass(frozen=True, slots=True)
class ClusterAssignment:
    run_id: str
    cluster_id: int


@dataclass(frozen=True, slots=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Any:  # named after the proto's `any`; this module never needs typing.Any
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Not:
    rule: Rule


Rule = (
    All
    | Any
    | Not
    | TraitComparison
    | EventCondition
    | EventAbsence
    | EventSequence
    | SegmentReference
    | ClusterAssignment
)


# --- field checks shared by the decoder ----------------------------------------------------


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp with a zone, or None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def event_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be used in an event filter, or None when it can."""
    for personal in PERSONAL_EVENT_PATHS:
        if path == personal or path.startswith(personal + "."):
            return f"{path} is personal and cannot be used in a rule"
    if not EVENT_PATH.match(path):
        return "a dotted event path such as product.product_id or properties.colour"
    if path.split(".", 1)[0] not in EVENT_PATH_ROOTS:
        roots = ", ".join(sorted(EVENT_PATH_ROOTS))
        return f"an event path starting with one of {roots}"
    return None


class _Problems:
    """Collects every violation so that a caller sees all of them at once."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str, reason: str) -> None:
        self.found.append(FieldViolation(field, description, reason))


def _duration(
    pb: duration_pb2.Duration, path: str, limit: timedelta, problems: _Problems
) -> timedelta | None:
    # Whole seconds only: the text form writes durations in whole units.
    if pb.nanos != 0 or pb.seconds <= 0:
        problems.add(path, "a positive whole number of seconds", "BAD_DURATION")
        return None
    if pb.seconds > limit.total_seconds():
        problems.add(path, f"at most {limit.days} days", "BAD_DURATION")
        return None
    return timedelta(seconds=pb.seconds)


def _name(value: str, path: str, what: str, problems: _Problems) -> None:
    if not value.strip():
        problems.add(path, f"a {what} is required", "REQUIRED")
    elif len(value) > MAX_NAME_LENGTH:
        problems.add(path, f"a {what} of at most {MAX_NAME_LENGTH} characters", "TOO_LONG")


def _scalar(pb: struct_pb2.Value) -> Scalar | struct_pb2.ListValue | struct_pb2.Struct:
    kind = pb.WhichOneof("kind")
    if kind == "string_value":
        return pb.string_value
    if kind == "number_value":
        return pb.number_value
    if kind == "bool_value":
        return pb.bool_value
    if kind == "list_value":
        return pb.list_value
    if kind == "struct_value":
        return pb.struct_value
    return None


def _operand_problem(op: Op, value: object) -> str | None:
    """What is wrong with a scalar operand of ``op``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    if op in (Op.EQ, Op.NE):
        ok = value is None or isinstance(value, str | float | bool)
        return None if ok else "a string, number, boolean or null"
    if op in ORDER_OPS:
        if isinstance(value, float) and not isinstance(value, bool):
            return None
        if isinstance(value, str) and parse_timestamp(value) is not None:
            return None
        return "a number or an RFC 3339 timestamp with a zone"
    if op == Op.CONTAINS:
        return None if isinstance(value, str | float | bool) else "a string, number or boolean"
    if op == Op.STARTS_WITH:
        return None if isinstance(value, str) else "a string"
    return None


def _comparison(
    pb: rules_pb2.TraitComparison | rules_pb2.PropertyFilter, path: str, problems: _Problems
) -> tuple[Op, Operand, timedelta | None] | None:
    """The operator and operand of a trait comparison or filter, checked for each other."""
    start = len(problems.found)
    try:
        op = Op(common_pb2.Comparison.Name(pb.op).removeprefix("COMPARISON_"))
    except ValueError:
        problems.add(f"{path}.op", "set a comparison", "REQUIRED")
        return None
    has_value = pb.HasField("value") and pb.value.WhichOneof("kind") is not None
    duration: timedelta | None = None
    if op in DURATION_OPS:
        if not pb.HasField("duration"):
            problems.add(f"{path}.duration", f"{op} needs a duration", "REQUIRED")
        else:
            duration = _duration(pb.duration, f"{path}.duration", MAX_OPERAND_DURATION, problems)
    elif pb.HasField("duration"):
        problems.add(
            f"{path}.duration", "only WITHIN_LAST and BEFORE_LAST take a duration", "UNEXPECTED"
        )
    if op in DURATION_OPS or op in PRESENCE_OPS:
        if has_value:
            problems.add(f"{path}.value", f"{op} takes no value", "UNEXPECTED")
        return (op, None, duration) if len(problems.found) == start else None
    if not has_value:
        problems.add(f"{path}.value", f"{op} needs a value", "REQUIRED")
        return None
    raw = _scalar(pb.value)
    value: Operand
    if op in LIST_OPS:
        if not isinstance(raw, struct_pb2.ListValue):
            problems.add(f"{path}.value", f"{op} needs a list", "OPERAND_MISMATCH")
            return None
        if not 1 <= len(raw.values) <= MAX_IN_VALUES:
            problems.add(f"{path}.value", f"a list of 1..{MAX_IN_VALUES} values", "COUNT")
        items: list[str | float | bool] = []
        for index, element in enumerate(raw.values):
            item = _scalar(element)
            if not isinstance(item, str | float | bool) or _operand_problem(Op.EQ, item):
                problems.add(
                    f"{path}.value.list_value.values[{index}]",
                    "a string, finite number or boolean",
                    "OPERAND_MISMATCH",
                )
            else:
                items.append(item)
        value = tuple(items)
    else:
        if isinstance(raw, struct_pb2.ListValue | struct_pb2.Struct):
            problems.add(f"{path}.value", f"{op} needs a single value", "OPERAND_MISMATCH")
            return None
        problem = _operand_problem(op, raw)
        if problem:
            problems.add(f"{path}.value", f"{op} needs {problem}", "OPERAND_MISMATCH")
        value = raw
    return (op, value, duration) if len(problems.found) == start else None


def _matcher(pb: rules_pb2.EventMatcher, path: str, problems: _Problems) -> EventMatcher | None:
    start = len(problems.found)
    _name(pb.event, f"{path}.event", "event name", problems)
    if len(pb.filters) > MAX_FILTERS:
        problems.add(f"{path}.filters", f"at most {MAX_FILTERS} filters", "COUNT")
    filters: list[PropertyFilter] = []
    for index, filter_pb in enumerate(pb.filters):
        filter_path = f"{path}.filters[{index}]"
        problem = event_path_problem(filter_pb.property)
        if problem:
            problems.add(f"{filter_path}.property", problem, "BAD_PATH")
        comparison = _comparison(filter_pb, filter_path, problems)
        if comparison is not None:
            filters.append(PropertyFilter(filter_pb.property, *comparison))
    return EventMatcher(pb.event, tuple(filters)) if len(problems.found) == start else None


def _required_matcher(
    parent: rules_pb2.EventCondition | rules_pb2.EventAbsence | rules_pb2.EventSequence,
    field: str,
    path: str,
    problems: _Problems,
) -> EventMatcher | None:
    if not parent.HasField(field):  # type: ignore[arg-type]
        problems.add(f"{path}.{field}", "an event matcher is required", "REQUIRED")
        return None
    matcher: rules_pb2.EventMatcher = getattr(parent, field)
    return _matcher(matcher, f"{path}.{field}", problems)


def _event_condition(
    pb: rules_pb2.EventCondition, path: str, problems: _Problems
) -> EventCondition | None:
    start = len(problems.found)
    match = _required_matcher(pb, "match", path, problems)
    window = None
    if pb.HasField("window"):
        window = _duration(pb.window, f"{path}.window", MAX_WINDOW, problems)
    aggregate = None
    if pb.aggregate == rules_pb2.AGGREGATE_COUNT:
        aggregate = Aggregate.COUNT
        if pb.property:
            problems.add(f"{path}.property", "COUNT takes no property", "UNEXPECTED")
    elif pb.aggregate == rules_pb2.AGGREGATE_SUM:
        aggregate = Aggregate.SUM
        problem = event_path_problem(pb.property) if pb.property else "SUM needs a property"
        if problem:
            problems.add(f"{path}.property", problem, "BAD_PATH")
    else:
        problems.add(f"{path}.aggregate", "COUNT or SUM", "REQUIRED")
    name = common_pb2.Comparison.Name(pb.op).removeprefix("COMPARISON_")
    op = Op(name) if name in Op.__members__ else None
    if op not in NUMERIC_OPS:
        problems.add(f"{path}.op", "one of EQ, NE, GT, GE, LT, LE", "OPERATOR_MISMATCH")
    if not math.isfinite(pb.threshold):
        problems.add(f"{path}.threshold", "a finite number", "OPERAND_MISMATCH")
    if len(problems.found) > start or match is None or aggregate is None or op is None:
        return None
    return EventCondition(match, aggregate, op, pb.threshold, pb.property or None, window)


def _event_absence(
    pb: rules_pb2.EventAbsence, path: str, problems: _Problems
) -> EventAbsence | None:
    match = _required_matcher(pb, "match", path, problems)
    window = None
    if pb.HasField("window"):
        window = _duration(pb.window, f"{path}.window", MAX_WINDOW, problems)
    else:
        problems.add(f"{path}.window", "an absence needs a window", "REQUIRED")
    if match is None or window is None:
        return None
    return EventAbsence(match, window)


def _event_sequence(
    pb: rules_pb2.EventSequence, path: str, problems: _Problems
) -> EventSequence | None:
    start = len(problems.found)
    first = _required_matcher(pb, "first", path, problems)
    then = _required_matcher(pb, "then", path, problems)
    within = window = None
    if pb.HasField("within"):
        within = _duration(pb.within, f"{path}.within", MAX_WINDOW, problems)
    else:
        problems.add(f"{path}.within", "a sequence needs a time", "REQUIRED")
    if pb.HasField("window"):
        window = _duration(pb.window, f"{path}.window", MAX_WINDOW, problems)
    if pb.then_absent and window is not None and within is not None and window <= within:
        # The first event would leave the window before its time ran out: never true.
        problems.add(f"{path}.window", "longer than the sequence's time", "BAD_DURATION")
    if len(pb.correlate_on) > MAX_CORRELATE_ON:
        problems.add(f"{path}.correlate_on", f"at most {MAX_CORRELATE_ON} paths", "COUNT")
    for index, correlated in enumerate(pb.correlate_on):
        problem = event_path_problem(correlated)
        if problem:
            problems.add(f"{path}.correlate_on[{index}]", problem, "BAD_PATH")
    if len(problems.found) > start or first is None or then is None or within is None:
        return None
    return EventSequence(first, then, within, pb.then_absent, window, tuple(pb.correlate_on))


def _trait(pb: rules_pb2.TraitComparison, path: str, problems: _Problems) -> Rule | None:
    trait_ok = bool(TRAIT_NAME.match(pb.trait))
    if not trait_ok:
        problems.add(f"{path}.trait", "a trait name such as computed.orders_lifetime", "BAD_NAME")
    comparison = _comparison(pb, path, problems)
    if not trait_ok or comparison is None:
        return None
    return TraitComparison(pb.trait, *comparison)


def _children(
    pb: rules_pb2.RuleList, path: str, depth: int, problems: _Problems
) -> tuple[Rule, ...] | None:
    count = len(pb.rules)
    if not 1 <= count <= MAX_CHILDREN:
        problems.add(f"{path}.rules", f"1..{MAX_CHILDREN} rules", "COUNT")
    children = [
        _rule(child, f"{path}.rules[{index}]", depth + 1, problems)
        for index, child in enumerate(pb.rules)
    ]
    decoded = [child for child in children if child is not None]
    if len(decoded) != count or not 1 <= count <= MAX_CHILDREN:
        return None
    return tuple(decoded)


def _rule(pb: rules_pb2.Rule, path: str, depth: int, problems: _Problems) -> Rule | None:
    if depth > MAX_DEPTH:
        problems.add(path, f"rules nest at most {MAX_DEPTH} deep", "TOO_DEEP")
        return None
    kind = pb.WhichOneof("node")
    node_path = f"{path}.{kind}"
    if kind is None:
        problems.add(path, "set exactly one kind of rule", "REQUIRED")
        return None
    if kind in ("all", "any"):
        children = _children(pb.all if kind == "all" else pb.any, node_path, depth, problems)
        if children is None:
            return None
        return All(children) if kind == "all" else Any(children)
    if kind == "not":
        child = _rule(getattr(pb, "not"), node_path, depth + 1, problems)
        return Not(child) if child is not None else None
    if kind == "trait":
        return _trait(pb.trait, node_path, problems)
    if kind == "event":
        return _event_condition(pb.event, node_path, problems)
    if kind == "absence":
        return _event_absence(pb.absence, node_path, problems)
    if kind == "sequence":
        return _event_sequence(pb.sequence, node_path, problems)
    if kind == "segment":
        _name(pb.segment.segment_id, f"{node_path}.segment_id", "segment id", problems)
        ok = bool(pb.segment.segment_id.strip()) and len(pb.segment.segment_id) <= MAX_NAME_LENGTH
        return SegmentReference(pb.segment.segment_id) if ok else None
    start = len(problems.found)
    _name(pb.cluster.run_id, f"{node_path}.run_id", "discovery run id", problems)
    if pb.cluster.cluster_id < 0:
        problems.add(f"{node_path}.cluster_id", "a cluster index >= 0", "OUT_OF_RANGE")
    if len(problems.found) > start:
        return None
    return ClusterAssignment(pb.cluster.run_id, pb.cluster.cluster_id)


def from_proto(rule: rules_pb2.Rule, path: str = "rule") -> Rule:
    """The rule tree, or InvalidArgument listing every problem with its field path."""
    problems = _Problems()
    decoded = _rule(rule, path, 1, problems)
    if problems.found or decoded is None:
        first = problems.found[0]
        more = f" (and {len(problems.found) - 1} more)" if len(problems.found) > 1 else ""
        raise InvalidArgument(
            f"invalid rule: {first.field}: {first.description}{more}", problems.found
        )
    return decoded


def validate(rule: Rule, path: str = "rule") -> None:
    """Raises InvalidArgument as from_proto does, for a rule built in Python."""
    from_proto(to_proto(rule), path)


# --- to protobuf --------------------------------------------------------------------------


def _value_pb(value: Operand) -> struct_pb2.Value:
    if isinstance(value, tuple):
        return struct_pb2.Value(
            list_value=struct_pb2.ListValue(values=[_value_pb(v) for v in value])
        )
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(number_value=value)


def _duration_pb(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def _comparison_fields(op: Op, value: Operand, duration: timedelta | None) -> dict[str, object]:
    fields: dict[str, object] = {"op": common_pb2.Comparison.Value(f"COMPARISON_{op.value}")}
    if op not in PRESENCE_OPS and op not in DURATION_OPS:
        fields["value"] = _value_pb(value)
    if duration is not None:
        fields["duration"] = _duration_pb(duration)
    return fields


def _matcher_pb(matcher: EventMatcher) -> rules_pb2.EventMatcher:
    filters = [
        rules_pb2.PropertyFilter(
            property=f.property,
            **_comparison_fields(f.op, f.value, f.duration),  # type: ignore[arg-type]
        )
        for f in matcher.filters
    ]
    return rules_pb2.EventMatcher(event=matcher.event, filters=filters)


def to_proto(rule: Rule) -> rules_pb2.Rule:
    """The protobuf form; ``from_proto(to_proto(rule)) == rule`` for a valid rule."""
    message = rules_pb2.Rule()
    match rule:
        case All(rules=children):
            message.all.rules.extend(to_proto(child) for child in children)
        case Any(rules=children):
            message.any.rules.extend(to_proto(child) for child in children)
        case Not(rule=child):
            getattr(message, "not").CopyFrom(to_proto(child))
        case TraitComparison():
            fields = _comparison_fields(rule.op, rule.value, rule.duration)
            message.trait.CopyFrom(rules_pb2.TraitComparison(trait=rule.trait, **fields))  # type: ignore[arg-type]
        case EventCondition():
            message.event.match.CopyFrom(_matcher_pb(rule.match))
            if rule.window is not None:
                message.event.window.CopyFrom(_duration_pb(rule.window))
            message.event.aggregate = rules_pb2.Aggregate.Value(f"AGGREGATE_{rule.aggregate.value}")
            message.event.property = rule.property or ""
            message.event.op = common_pb2.Comparison.Value(f"COMPARISON_{rule.op.value}")
            message.event.threshold = rule.threshold
        case EventAbsence():
            message.absence.match.CopyFrom(_matcher_pb(rule.match))
            message.absence.window.CopyFrom(_duration_pb(rule.window))
        case EventSequence():
            sequence = message.sequence
            sequence.first.CopyFrom(_matcher_pb(rule.first))
            sequence.then.CopyFrom(_matcher_pb(rule.then))
            sequence.within.CopyFrom(_duration_pb(rule.within))
            sequence.then_absent = rule.then_absent
            if rule.window is not None:
                sequence.window.CopyFrom(_duration_pb(rule.window))
            sequence.correlate_on.extend(rule.correlate_on)
        case SegmentReference():
            message.segment.segment_id = rule.segment_id
        case ClusterAssignment():
            message.cluster.run_id = rule.run_id
            message.cluster.cluster_id = rule.cluster_id
    return message


# --- what the service needs to know about a rule ---------------------------------------------


def nodes(rule: Rule) -> Iterator[Rule]:
    """Every node of the tree, parents before children, left to right."""
    yield rule
    if isinstance(rule, All | Any):
        for child in rule.rules:
            yield from nodes(child)
    elif isinstance(rule, Not):
        yield from nodes(rule.rule)


def referenced_segments(rule: Rule) -> set[str]:
    return {node.segment_id for node in nodes(rule) if isinstance(node, SegmentReference)}


def referenced_traits(rule: Rule) -> set[str]:
    return {node.trait for node in nodes(rule) if isinstance(node, TraitComparison)}


def event_matchers(rule: Rule) -> list[EventMatcher]:
    """The distinct matchers of the rule's event nodes, in tree order: which events matter."""
    found: list[EventMatcher] = []
    for node in nodes(rule):
        if isinstance(node, EventCondition | EventAbsence):
            candidates = [node.match]
        elif isinstance(node, EventSequence):
            candidates = [node.first, node.then]
        else:
            continue
        found.extend(m for m in candidates if m not in found)
    return found


def lookback(rule: Rule) -> timedelta | None:
    """How far back events are needed: the longest window (plus a sequence's time);
    None when some node looks at the whole lifetime; zero when no node reads events."""
    longest = timedelta(0)
    for node in nodes(rule):
        if isinstance(node, EventCondition | EventAbsence):
            if node.window is None:
                return None
            longest = max(longest, node.window)
        elif isinstance(node, EventSequence):
            if node.window is None:
                return None
            longest = max(longest, node.window + node.within)
    return longest


def uses_clock(rule: Rule) -> bool:
    """True when the result can change with time alone (windows, sequence times, trait
    timestamps measured from now), so that the segment clock must watch it."""
    for node in nodes(rule):
        if isinstance(node, EventCondition) and node.window is not None:
            return True
        if isinstance(node, EventAbsence):
            return True
        if isinstance(node, EventSequence) and (node.then_absent or node.window is not None):
            return True
        if isinstance(node, TraitComparison) and node.op in DURATION_OPS:
            return True
    return False
