"""Validation: one case per reason, the normalisations, and random input that never breaks it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.struct_pb2 import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2
from tailor_core.errors import InvalidArgument
from tailor_core.testing.fuzz import messages
from tailor_ingest.domain.validation import derive_message_id, validate_event
from tailor_ingest.entrypoints.convert import plan_from_proto, plan_to_proto
from tailor_ingest.testing import order_event, page_event

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
R = events_pb2.ValidationReason
Edit = Callable[[events_pb2.CustomerEvent], object]


def _order(edit: Edit) -> events_pb2.CustomerEvent:
    event = order_event("uci-1", "536365", message_id="m-1", when=NOW)
    edit(event)
    return event


def _identify(edit: Edit) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(message_id="m-2", user_id="u", identify=events_pb2.Identify())
    event.timestamp.FromDatetime(NOW)
    edit(event)
    return event


def _set(path: str, value: object) -> Edit:
    def edit(event: events_pb2.CustomerEvent) -> None:
        *parents, last = path.split(".")
        target: object = event
        for name in parents:
            target = getattr(target, name)
        setattr(target, last, value)

    return edit


def _personal(field: str, text: str) -> Edit:
    return lambda e: getattr(e.identify, field).CopyFrom(common_pb2.PersonalField(plaintext=text))


CASES = [
    (
        "no identity",
        _order(lambda e: e.ClearField("user_id")),
        "user_id",
        R.VALIDATION_REASON_MISSING_IDENTITY,
    ),
    (
        "long user id",
        _order(_set("user_id", "u" * 129)),
        "user_id",
        R.VALIDATION_REASON_ID_MALFORMED,
    ),
    (
        "control char in message id",
        _order(_set("message_id", "a\nb")),
        "message_id",
        R.VALIDATION_REASON_ID_MALFORMED,
    ),
    (
        "no event name",
        _order(_set("track.event", "")),
        "track.event",
        R.VALIDATION_REASON_REQUIRED_FIELD_MISSING,
    ),
    (
        "no order id",
        _order(_set("track.order.order_id", "")),
        "track.order.order_id",
        R.VALIDATION_REASON_REQUIRED_FIELD_MISSING,
    ),
    (
        "payload mismatch",
        _order(_set("track.event", "Product Viewed")),
        "track.order",
        R.VALIDATION_REASON_PAYLOAD_MISMATCH,
    ),
    (
        "negative quantity",
        _order(lambda e: setattr(e.track.order.products[0], "quantity", -1)),
        "track.order.products[0].quantity",
        R.VALIDATION_REASON_NEGATIVE_QUANTITY,
    ),
    (
        "negative price",
        _order(lambda e: setattr(e.track.order.products[0].price, "amount", "-2.55")),
        "track.order.products[0].price.amount",
        R.VALIDATION_REASON_NEGATIVE_AMOUNT,
    ),
    (
        "malformed amount",
        _order(_set("track.order.revenue.amount", "1,50")),
        "track.order.revenue.amount",
        R.VALIDATION_REASON_AMOUNT_MALFORMED,
    ),
    (
        "unknown currency",
        _order(_set("track.order.revenue.currency", "XYZ")),
        "track.order.revenue.currency",
        R.VALIDATION_REASON_CURRENCY_UNKNOWN,
    ),
    (
        "future timestamp",
        _order(lambda e: e.timestamp.FromDatetime(NOW + timedelta(hours=1))),
        "timestamp",
        R.VALIDATION_REASON_TIMESTAMP_IN_FUTURE,
    ),
    (
        "old timestamp",
        _order(lambda e: e.timestamp.FromDatetime(NOW - timedelta(days=500))),
        "timestamp",
        R.VALIDATION_REASON_TIMESTAMP_TOO_OLD,
    ),
    (
        "timestamp past year 9999",
        _order(_set("timestamp.seconds", 2**40)),
        "timestamp",
        R.VALIDATION_REASON_TIMESTAMP_IN_FUTURE,
    ),
    (
        "unknown time zone",
        _order(_set("context.timezone", "Mars/Olympus")),
        "context.timezone",
        R.VALIDATION_REASON_CODE_UNKNOWN,
    ),
    (
        "unknown country",
        _order(_set("context.location.country", "XX")),
        "context.location.country",
        R.VALIDATION_REASON_CODE_UNKNOWN,
    ),
    (
        "bad locale",
        _order(_set("context.locale", "english please")),
        "context.locale",
        R.VALIDATION_REASON_CODE_UNKNOWN,
    ),
    (
        "pre-encrypted ip",
        _order(lambda e: e.context.ip.encrypted.SetInParent()),
        "context.ip",
        R.VALIDATION_REASON_PERSONAL_FIELD_PRE_ENCRYPTED,
    ),
    (
        "bad email",
        _identify(_personal("email", "not-an-address")),
        "identify.email",
        R.VALIDATION_REASON_EMAIL_MALFORMED,
    ),
    (
        "bad phone",
        _identify(_personal("phone", "call me")),
        "identify.phone",
        R.VALIDATION_REASON_PHONE_MALFORMED,
    ),
    (
        "bad birthday",
        _identify(_personal("birthday", "1990-02-30")),
        "identify.birthday",
        R.VALIDATION_REASON_DATE_MALFORMED,
    ),
    (
        "implausible age",
        _identify(_set("identify.demographics.age", 7)),
        "identify.demographics.age",
        R.VALIDATION_REASON_AGE_IMPLAUSIBLE,
    ),
    (
        "group without id",
        _identify(lambda e: e.group.SetInParent()),
        "group.group_id",
        R.VALIDATION_REASON_REQUIRED_FIELD_MISSING,
    ),
    (
        "alias without previous id",
        _identify(lambda e: e.alias.SetInParent()),
        "alias.previous_id",
        R.VALIDATION_REASON_REQUIRED_FIELD_MISSING,
    ),
    (
        "app without action",
        _order(
            lambda e: (setattr(e.track, "event", "Application Opened"), e.track.app.SetInParent())
        ),
        "track.app.action",
        R.VALIDATION_REASON_REQUIRED_FIELD_MISSING,
    ),
    (
        "satisfaction out of range",
        _order(
            lambda e: (
                setattr(e.track, "event", "Chat Ended"),
                setattr(e.track.support, "satisfaction", 9),
            )
        ),
        "track.support.satisfaction",
        R.VALIDATION_REASON_VALUE_OUT_OF_RANGE,
    ),
    (
        "too large",
        _order(lambda e: e.properties.update({"blob": "x" * 40_000})),
        "event",
        R.VALIDATION_REASON_EVENT_TOO_LARGE,
    ),
    (
        "too many properties",
        _order(lambda e: e.properties.update({f"p{i}": i for i in range(300)})),
        "properties",
        R.VALIDATION_REASON_TOO_MANY_PROPERTIES,
    ),
    (
        "long string property",
        _order(lambda e: e.properties.update({"note": {"deep": "y" * 9000}})),
        "properties.note.deep",
        R.VALIDATION_REASON_VALUE_TOO_LONG,
    ),
]


@pytest.mark.parametrize(("name", "event", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_names_the_field_and_reason(
    name: str, event: events_pb2.CustomerEvent, field: str, reason: int
) -> None:
    verdict = validate_event(event, None, now=NOW)
    assert (field, reason) in [(i.field, i.reason) for i in verdict.errors], verdict.errors
    assert verdict.rejected


def test_a_good_order_passes_and_needs_only_necessary_consent() -> None:
    verdict = validate_event(order_event("u", "1", when=NOW), None, now=NOW)
    assert verdict.errors == []
    assert verdict.purpose == "necessary"
    assert verdict.event_name == "track:Order Completed"
    # No plan: accepted, flagged as unplanned (admin.proto).
    assert [w.reason for w in verdict.warnings] == [R.VALIDATION_REASON_EVENT_NOT_IN_PLAN]


def test_the_wrong_rpc_for_the_kind_is_a_kind_mismatch() -> None:
    event = page_event("a", "p")
    event.timestamp.FromDatetime(NOW)  # the builder stamps the real clock; NOW is fixed
    verdict = validate_event(event, None, now=NOW, expected_kind="track")
    assert [(i.field, i.reason) for i in verdict.errors] == [
        ("kind", R.VALIDATION_REASON_KIND_MISMATCH)
    ]


def test_client_clock_skew_is_corrected_and_flagged() -> None:
    event = order_event("u", "1", when=NOW + timedelta(minutes=30))
    event.sent_at.FromDatetime(NOW + timedelta(minutes=30, seconds=5))  # client 30 min ahead
    verdict = validate_event(event, None, now=NOW)
    assert verdict.errors == []
    assert event.timestamp.ToDatetime(tzinfo=UTC) == NOW - timedelta(seconds=5)
    assert R.VALIDATION_REASON_TIMESTAMP_CLOCK_SKEW_CORRECTED in [
        w.reason for w in verdict.warnings
    ]


def test_a_missing_timestamp_becomes_now_and_query_strings_are_dropped() -> None:
    event = page_event("a", "p")
    event.ClearField("timestamp")
    event.page.path = "/checkout?email=ada@example.com#pay"
    event.page.referrer = "https://mail.example.com/inbox?id=7"
    verdict = validate_event(event, None, now=NOW)
    assert event.timestamp.ToDatetime(tzinfo=UTC) == NOW
    assert (event.page.path, event.page.referrer) == ("/checkout", "mail.example.com")
    assert [w.reason for w in verdict.warnings].count(R.VALIDATION_REASON_QUERY_STRING_DROPPED) == 2
    assert all("ada" not in w.description for w in verdict.warnings)


def _plan(**rule_fields: object) -> admin_pb2.TrackingPlan:
    return admin_pb2.TrackingPlan(
        source_id="shop",
        events=[
            admin_pb2.EventRule(
                event="Product Viewed",
                properties=[
                    admin_pb2.PropertyRule(
                        name="colour",
                        type=admin_pb2.PROPERTY_TYPE_STRING,
                        allowed_values=["red", "blue"],
                    ),
                    admin_pb2.PropertyRule(
                        name="size",
                        type=admin_pb2.PROPERTY_TYPE_INTEGER,
                        minimum=1,
                        maximum=10,
                        required=True,
                    ),
                    admin_pb2.PropertyRule(name="sku", pattern="[A-Z]{3}-\\d+"),
                    admin_pb2.PropertyRule(name="note", personal=True),
                    admin_pb2.PropertyRule(name="launch", type=admin_pb2.PROPERTY_TYPE_DATE),
                ],
                **rule_fields,  # type: ignore[arg-type]
            )
        ],
        unplanned_events=admin_pb2.UNPLANNED_POLICY_REJECT,
    )


def _viewed(**properties: object) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(message_id="v", anonymous_id="a")
    event.track.event = "Product Viewed"
    event.properties.update(properties)
    event.timestamp.FromDatetime(NOW)
    return event


PLAN_CASES = [
    ({"size": 3, "colour": "green"}, "properties.colour", R.VALIDATION_REASON_VALUE_NOT_ALLOWED),
    ({"colour": "red"}, "properties.size", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING),
    ({"size": 2.5}, "properties.size", R.VALIDATION_REASON_WRONG_TYPE),
    ({"size": 11}, "properties.size", R.VALIDATION_REASON_VALUE_OUT_OF_RANGE),
    ({"size": 3, "sku": "abc"}, "properties.sku", R.VALIDATION_REASON_PATTERN_MISMATCH),
    ({"size": 3, "launch": "2026-13-01"}, "properties.launch", R.VALIDATION_REASON_DATE_MALFORMED),
]


@pytest.mark.parametrize(("properties", "field", "reason"), PLAN_CASES)
def test_plan_rules_name_the_property(
    properties: dict[str, object], field: str, reason: int
) -> None:
    verdict = validate_event(_viewed(**properties), plan_from_proto(_plan()), now=NOW)
    assert (field, reason) in [(i.field, i.reason) for i in verdict.errors]


def test_unplanned_events_and_properties_follow_the_plans_policies() -> None:
    rejecting = plan_from_proto(_plan(unplanned_properties=admin_pb2.UNPLANNED_POLICY_REJECT))
    other = _viewed(size=3)
    other.track.event = "Video Played"
    assert [i.reason for i in validate_event(other, rejecting, now=NOW).errors] == [
        R.VALIDATION_REASON_EVENT_NOT_IN_PLAN
    ]
    extra = _viewed(size=3, mood="happy")
    assert [(i.field, i.reason) for i in validate_event(extra, rejecting, now=NOW).errors] == [
        ("properties.mood", R.VALIDATION_REASON_PROPERTY_NOT_IN_PLAN)
    ]
    dropping = plan_from_proto(_plan(unplanned_properties=admin_pb2.UNPLANNED_POLICY_DROP))
    dropped = _viewed(size=3, mood="happy")
    verdict = validate_event(dropped, dropping, now=NOW)
    assert verdict.errors == []
    assert "mood" not in dropped.properties


def test_a_personal_property_is_moved_where_it_will_be_sealed() -> None:
    event = _viewed(size=3, note="call Ada on 0123")
    verdict = validate_event(event, plan_from_proto(_plan()), now=NOW)
    assert verdict.errors == []
    assert "note" not in event.properties
    assert event.personal_properties["note"].plaintext == "call Ada on 0123"


def test_a_bad_plan_names_every_offending_rule() -> None:
    bad = admin_pb2.TrackingPlan(
        source_id="shop",
        default_collection_purpose="Not A Purpose",
        events=[
            admin_pb2.EventRule(
                event="A", properties=[admin_pb2.PropertyRule(name="x", minimum=5, maximum=1)]
            ),
            admin_pb2.EventRule(event="A"),
            admin_pb2.EventRule(
                event="B",
                properties=[
                    admin_pb2.PropertyRule(name="p", pattern="("),
                    admin_pb2.PropertyRule(
                        name="p", type=admin_pb2.PROPERTY_TYPE_BOOLEAN, minimum=1
                    ),
                ],
            ),
        ],
    )
    with pytest.raises(InvalidArgument) as caught:
        plan_from_proto(bad)
    assert [v.field for v in caught.value.field_violations] == [
        "plan.default_collection_purpose",
        "plan.events[0].properties[0].maximum",
        "plan.events[1].event",
        "plan.events[2].properties[0].pattern",
        "plan.events[2].properties[1].name",
        "plan.events[2].properties[1].minimum",
    ]


def test_a_plan_round_trips_through_its_protobuf() -> None:
    plan = plan_from_proto(_plan())
    again = plan_from_proto(plan_to_proto(plan))
    assert again == plan


def test_a_derived_message_id_ignores_sent_at_but_not_content() -> None:
    first = order_event("u", "1", when=NOW)
    second = order_event("u", "1", when=NOW)
    second.sent_at.FromDatetime(NOW)
    third = order_event("u", "2", when=NOW)
    assert derive_message_id(first) == derive_message_id(second) != derive_message_id(third)


@settings(max_examples=300, deadline=None, database=None)
@given(
    messages(events_pb2.CustomerEvent.DESCRIPTOR), st.none() | st.sampled_from(["track", "page"])
)
def test_random_events_never_break_validation(
    event: events_pb2.CustomerEvent, expected: str | None
) -> None:
    verdict = validate_event(event, None, now=NOW, expected_kind=expected)
    for issue in [*verdict.errors, *verdict.warnings]:
        assert issue.field
        assert issue.reason != R.VALIDATION_REASON_UNSPECIFIED
    event.SerializeToString()  # still a valid message after normalisation


def test_a_struct_with_nan_does_not_break_validation() -> None:
    event = _viewed(size=3)
    event.properties.fields["x"].number_value = float("nan")
    validate_event(event, plan_from_proto(_plan()), now=NOW)
    assert isinstance(event.properties, Struct)
