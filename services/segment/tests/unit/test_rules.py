"""Rule trees: protobuf validation with field paths, both round trips, and the helpers."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from google.protobuf import duration_pb2, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.segment.v1 import rules_pb2
from tailor_core.errors import InvalidArgument
from tailor_segment.domain import rules as r
from tailor_segment.domain.rule_text import parse, render

# --- strategies for valid rules -------------------------------------------------------------

names = st.text(min_size=1, max_size=12).filter(lambda s: bool(s.strip()))
plain_strings = st.text(max_size=12)
numbers = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(plain_strings, numbers, st.booleans())
timestamps = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
windows = st.integers(1, 400 * 86400).map(lambda s: timedelta(seconds=s))
operand_durations = st.integers(1, 36500 * 86400).map(lambda s: timedelta(seconds=s))
trait_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,2}", fullmatch=True)
event_paths = st.builds(
    lambda root, rest: f"{root}.{rest}",
    st.sampled_from(sorted(r.EVENT_PATH_ROOTS)),
    st.from_regex(r"[A-Za-z0-9_]{1,6}(\.[A-Za-z0-9_]{1,6}){0,1}", fullmatch=True),
).filter(lambda p: r.event_path_problem(p) is None)


@st.composite
def comparisons(draw: st.DrawFn) -> tuple[r.Op, r.Operand, timedelta | None]:
    op = draw(st.sampled_from(list(r.Op)))
    if op in (r.Op.EQ, r.Op.NE):
        return op, draw(st.one_of(scalars, st.none())), None
    if op in r.ORDER_OPS:
        return op, draw(st.one_of(numbers, timestamps)), None
    if op in r.LIST_OPS:
        return op, tuple(draw(st.lists(scalars, min_size=1, max_size=4))), None
    if op == r.Op.CONTAINS:
        return op, draw(scalars), None
    if op == r.Op.STARTS_WITH:
        return op, draw(plain_strings), None
    if op in r.DURATION_OPS:
        return op, None, draw(operand_durations)
    return op, None, None


matchers = st.builds(
    r.EventMatcher,
    names,
    st.lists(
        st.builds(lambda path, c: r.PropertyFilter(path, *c), event_paths, comparisons()),
        max_size=3,
    ).map(tuple),
)


@st.composite
def event_conditions(draw: st.DrawFn) -> r.EventCondition:
    aggregate = draw(st.sampled_from(list(r.Aggregate)))
    prop = draw(event_paths) if aggregate == r.Aggregate.SUM else None
    op = draw(st.sampled_from(sorted(r.NUMERIC_OPS)))
    window = draw(st.none() | windows)
    return r.EventCondition(draw(matchers), aggregate, op, draw(numbers), prop, window)


@st.composite
def sequences(draw: st.DrawFn) -> r.EventSequence:
    then_absent = draw(st.booleans())
    within = draw(st.integers(1, 399 * 86400).map(lambda s: timedelta(seconds=s)))
    window = draw(st.none() | windows)
    if then_absent and window is not None and window <= within:
        window = within + timedelta(seconds=1)
    correlate = tuple(draw(st.lists(event_paths, max_size=2)))
    return r.EventSequence(draw(matchers), draw(matchers), within, then_absent, window, correlate)


leaves = st.one_of(
    st.builds(lambda name, c: r.TraitComparison(name, *c), trait_names, comparisons()),
    event_conditions(),
    st.builds(r.EventAbsence, matchers, windows),
    sequences(),
    st.builds(r.SegmentReference, names),
    st.builds(r.ClusterAssignment, names, st.integers(0, 2**31 - 1)),
)


def _depth(rule: r.Rule) -> int:
    if isinstance(rule, r.All | r.Any):
        return 1 + max(_depth(child) for child in rule.rules)
    if isinstance(rule, r.Not):
        return 1 + _depth(rule.rule)
    return 1


valid_rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=4).map(lambda rs: r.All(tuple(rs))),
        st.lists(children, min_size=1, max_size=4).map(lambda rs: r.Any(tuple(rs))),
        children.map(r.Not),
    ),
    max_leaves=8,
).filter(lambda rule: _depth(rule) <= r.MAX_DEPTH)

# --- round trips ---------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rules)
def test_proto_form_round_trips(rule: r.Rule) -> None:
    assert r.from_proto(r.to_proto(rule)) == rule


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(valid_rules)
def test_text_form_round_trips(rule: r.Rule) -> None:
    text = render(rule)
    assert parse(text) == rule
    assert render(parse(text)) == text


# --- validation ----------------------------------------------------------------------------


def _duration(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def _problems(rule: rules_pb2.Rule) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        r.from_proto(rule)
    return {v.field: v.description for v in caught.value.field_violations}


def test_every_problem_is_reported_with_its_path() -> None:
    event = rules_pb2.EventCondition(
        match=rules_pb2.EventMatcher(event="Product Viewed"),
        window=_duration(401 * 86400),
        aggregate=rules_pb2.AGGREGATE_COUNT,
        op=common_pb2.COMPARISON_IN,
        threshold=1,
    )
    absence = rules_pb2.EventAbsence(match=rules_pb2.EventMatcher(event="Order Completed"))
    personal_filter = rules_pb2.PropertyFilter(
        property="identify.email", op=common_pb2.COMPARISON_EXISTS
    )
    sequence = rules_pb2.EventSequence(
        first=rules_pb2.EventMatcher(event="A", filters=[personal_filter]),
        then=rules_pb2.EventMatcher(event=""),
        within=_duration(0),
    )
    trait = rules_pb2.TraitComparison(
        trait="Orders", op=common_pb2.COMPARISON_IN, value=struct_pb2.Value(string_value="x")
    )
    rule = rules_pb2.Rule(
        all=rules_pb2.RuleList(
            rules=[
                rules_pb2.Rule(trait=trait),
                rules_pb2.Rule(event=event),
                rules_pb2.Rule(absence=absence),
                rules_pb2.Rule(sequence=sequence),
                rules_pb2.Rule(),
            ]
        )
    )
    problems = _problems(rule)
    assert set(problems) == {
        "rule.all.rules[0].trait.trait",
        "rule.all.rules[0].trait.value",
        "rule.all.rules[1].event.window",
        "rule.all.rules[1].event.op",
        "rule.all.rules[2].absence.window",
        "rule.all.rules[3].sequence.first.filters[0].property",
        "rule.all.rules[3].sequence.then.event",
        "rule.all.rules[3].sequence.within",
        "rule.all.rules[4]",
    }
    assert "personal" in problems["rule.all.rules[3].sequence.first.filters[0].property"]
    assert "400 days" in problems["rule.all.rules[1].event.window"]


def test_aggregates_need_and_refuse_a_property() -> None:
    count = rules_pb2.EventCondition(
        match=rules_pb2.EventMatcher(event="X"),
        aggregate=rules_pb2.AGGREGATE_COUNT,
        property="order.revenue.amount",
        op=common_pb2.COMPARISON_GE,
    )
    total = rules_pb2.EventCondition(
        match=rules_pb2.EventMatcher(event="X"),
        aggregate=rules_pb2.AGGREGATE_SUM,
        op=common_pb2.COMPARISON_GE,
    )
    unset = rules_pb2.EventCondition(match=rules_pb2.EventMatcher(event="X"))
    rule = rules_pb2.Rule(
        any=rules_pb2.RuleList(
            rules=[
                rules_pb2.Rule(event=count),
                rules_pb2.Rule(event=total),
                rules_pb2.Rule(event=unset),
            ]
        )
    )
    assert set(_problems(rule)) == {
        "rule.any.rules[0].event.property",
        "rule.any.rules[1].event.property",
        "rule.any.rules[2].event.aggregate",
        "rule.any.rules[2].event.op",
    }


@pytest.mark.parametrize(
    ("op", "value", "duration", "bad_field"),
    [
        (common_pb2.COMPARISON_EXISTS, struct_pb2.Value(string_value="x"), None, "value"),
        (common_pb2.COMPARISON_EQ, None, None, "value"),
        (common_pb2.COMPARISON_WITHIN_LAST, None, None, "duration"),
        (common_pb2.COMPARISON_WITHIN_LAST, None, _duration(60, 5), "duration"),
        (common_pb2.COMPARISON_EQ, struct_pb2.Value(string_value="x"), _duration(60), "duration"),
        (common_pb2.COMPARISON_GT, struct_pb2.Value(string_value="yesterday"), None, "value"),
        (common_pb2.COMPARISON_STARTS_WITH, struct_pb2.Value(number_value=1), None, "value"),
        (common_pb2.COMPARISON_UNSPECIFIED, None, None, "op"),
    ],
)
def test_operands_must_fit_operators(
    op: int, value: struct_pb2.Value | None, duration: duration_pb2.Duration | None, bad_field: str
) -> None:
    trait = rules_pb2.TraitComparison(trait="last_seen", op=op)  # type: ignore[arg-type]
    if value is not None:
        trait.value.CopyFrom(value)
    if duration is not None:
        trait.duration.CopyFrom(duration)
    assert set(_problems(rules_pb2.Rule(trait=trait))) == {f"rule.trait.{bad_field}"}


def test_list_elements_are_reported_one_by_one() -> None:
    values = struct_pb2.ListValue()
    values.values.add().string_value = "ok"
    values.values.add().null_value = struct_pb2.NULL_VALUE
    trait = rules_pb2.TraitComparison(
        trait="country", op=common_pb2.COMPARISON_IN, value=struct_pb2.Value(list_value=values)
    )
    assert set(_problems(rules_pb2.Rule(trait=trait))) == {"rule.trait.value.list_value.values[1]"}


def test_children_filters_and_depth_are_limited() -> None:
    leaf = rules_pb2.Rule(segment=rules_pb2.SegmentReference(segment_id="vip"))
    too_many = rules_pb2.Rule(all=rules_pb2.RuleList(rules=[leaf] * 51))
    assert set(_problems(too_many)) == {"rule.all.rules"}
    assert set(_problems(rules_pb2.Rule(any=rules_pb2.RuleList()))) == {"rule.any.rules"}

    exists = rules_pb2.PropertyFilter(property="page.path", op=common_pb2.COMPARISON_EXISTS)
    absence = rules_pb2.EventAbsence(
        match=rules_pb2.EventMatcher(event="page", filters=[exists] * 21), window=_duration(60)
    )
    assert set(_problems(rules_pb2.Rule(absence=absence))) == {"rule.absence.match.filters"}

    deep = leaf
    for _ in range(10):
        wrapped = rules_pb2.Rule()
        getattr(wrapped, "not").CopyFrom(deep)
        deep = wrapped
    assert set(_problems(deep)) == {"rule" + ".not" * 10}


def test_then_absent_window_must_outlast_the_sequence_time() -> None:
    sequence = rules_pb2.EventSequence(
        first=rules_pb2.EventMatcher(event="Product Added"),
        then=rules_pb2.EventMatcher(event="Order Completed"),
        within=_duration(7200),
        then_absent=True,
        window=_duration(3600),
    )
    assert set(_problems(rules_pb2.Rule(sequence=sequence))) == {"rule.sequence.window"}


def _personal_paths(descriptor: object, prefix: str) -> list[str]:
    """Paths of every PersonalField in events.proto, named as event_fact names paths."""
    found: list[str] = []
    for field in descriptor.fields:  # type: ignore[attr-defined]
        path = f"{prefix}.{field.name}" if prefix else field.name
        message_type = field.message_type
        if message_type is None:
            continue
        if message_type.full_name == "tailor.common.v1.PersonalField":
            found.append(path)
        elif message_type.GetOptions().map_entry:
            value_type = message_type.fields_by_name["value"].message_type
            if value_type is not None and value_type.full_name.endswith("PersonalField"):
                found.append(f"{path}.anything")
        elif message_type.full_name.startswith("tailor."):
            found.extend(_personal_paths(message_type, path))
    return found


def test_every_personal_field_of_events_proto_is_refused() -> None:
    paths = _personal_paths(events_pb2.CustomerEvent.DESCRIPTOR, "")
    # A track payload is named by its field (track.order.x reads order.x).
    paths = [p.removeprefix("track.") for p in paths]
    assert "identify.email" in paths
    assert "context.precise_location" in paths
    for path in paths:
        assert r.event_path_problem(path) is not None, path


# --- helpers -------------------------------------------------------------------------------


def test_helpers_describe_what_a_rule_needs() -> None:
    rule = parse(
        'trait computed.orders_lifetime >= 3 and not in segment "vip" '
        'and (event "Product Viewed" count >= 2 within 7d '
        'or sequence "Product Added" then not "Order Completed" within 2h window 30d) '
        'and in segment "newsletter"'
    )
    assert r.referenced_segments(rule) == {"vip", "newsletter"}
    assert r.referenced_traits(rule) == {"computed.orders_lifetime"}
    assert [m.event for m in r.event_matchers(rule)] == [
        "Product Viewed",
        "Product Added",
        "Order Completed",
    ]
    assert r.lookback(rule) == timedelta(days=30, hours=2)
    assert r.uses_clock(rule)


def test_lifetime_and_static_rules() -> None:
    assert r.lookback(parse('event "Order Completed" count >= 1')) is None
    assert r.lookback(parse('trait country = "GB"')) == timedelta(0)
    assert not r.uses_clock(parse('event "Order Completed" count >= 1 and trait x exists'))
    assert r.uses_clock(parse("trait last_seen within last 7d"))
    assert r.uses_clock(parse('absent "X" within 7d'))
