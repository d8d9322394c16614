"""Tracking plans between their protobuf form and the checked domain form."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from tailor.ingest.v1 import admin_pb2
from tailor_core.errors import FieldViolation, InvalidArgument
from tailor_ingest.domain.api_keys import SOURCE_ID
from tailor_ingest.domain.plan import (
    ACCEPT_FLAGGED,
    DEFAULT_QUALITY,
    PURPOSE_NAME,
    EventRule,
    PropertyRule,
    QualitySettings,
    TrackingPlan,
)

_NUMERIC = {
    admin_pb2.PROPERTY_TYPE_UNSPECIFIED,
    admin_pb2.PROPERTY_TYPE_NUMBER,
    admin_pb2.PROPERTY_TYPE_INTEGER,
    admin_pb2.PROPERTY_TYPE_DECIMAL,
}
_POLICIES = set(admin_pb2.UnplannedPolicy.values())
_TYPES = set(admin_pb2.PropertyType.values())
MAX_RULES = 1000


def _duration(message: Any, name: str, default: timedelta) -> timedelta:
    span: timedelta = getattr(message, name).ToTimedelta() if message.HasField(name) else default
    return span


def _quality(
    message: admin_pb2.QualitySettings, path: str, problems: list[FieldViolation]
) -> QualitySettings:
    d = DEFAULT_QUALITY
    for name in ("max_clock_skew", "max_event_age"):
        if message.HasField(name):
            span = getattr(message, name)
            if span.seconds < 0 or span.nanos < 0 or span.seconds > 100 * 366 * 86400:
                problems.append(FieldViolation(f"{path}.{name}", "0 to 100 years", "OUT_OF_RANGE"))
    for name in ("max_properties", "max_string_length", "max_event_bytes"):
        if getattr(message, name) < 0:
            problems.append(FieldViolation(f"{path}.{name}", "must not be negative", "NEGATIVE"))
    min_age = message.min_age if message.HasField("min_age") else d.min_age
    max_age = message.max_age if message.HasField("max_age") else d.max_age
    if not 0 <= min_age <= max_age <= 200:
        problems.append(
            FieldViolation(f"{path}.min_age", "0 <= min_age <= max_age <= 200", "OUT_OF_RANGE")
        )
    if problems:
        return d
    return QualitySettings(
        max_clock_skew=_duration(message, "max_clock_skew", d.max_clock_skew),
        max_event_age=_duration(message, "max_event_age", d.max_event_age),
        min_age=min_age,
        max_age=max_age,
        max_properties=message.max_properties or d.max_properties,
        max_string_length=message.max_string_length or d.max_string_length,
        max_event_bytes=message.max_event_bytes or d.max_event_bytes,
    )


def _property(
    message: admin_pb2.PropertyRule, path: str, problems: list[FieldViolation]
) -> PropertyRule:
    if not message.name or len(message.name) > 200 or any(ord(c) < 0x20 for c in message.name):
        problems.append(FieldViolation(f"{path}.name", "1..200 printable characters", "REQUIRED"))
    if message.type not in _TYPES:
        problems.append(FieldViolation(f"{path}.type", "unknown property type", "UNKNOWN_TYPE"))
    has_min, has_max = message.HasField("minimum"), message.HasField("maximum")
    if (has_min or has_max) and message.type not in _NUMERIC:
        problems.append(
            FieldViolation(f"{path}.minimum", "a range needs a numeric type", "RANGE_NOT_NUMERIC")
        )
    for name in ("minimum", "maximum"):
        value = getattr(message, name)
        if message.HasField(name) and value != value:  # NaN
            problems.append(FieldViolation(f"{path}.{name}", "must be a number", "NOT_A_NUMBER"))
    if has_min and has_max and message.minimum > message.maximum:
        problems.append(
            FieldViolation(f"{path}.maximum", "must not be below minimum", "MIN_ABOVE_MAX")
        )
    if message.max_length < 0:
        problems.append(FieldViolation(f"{path}.max_length", "must not be negative", "NEGATIVE"))
    pattern = None
    if message.pattern:
        try:
            pattern = re.compile(message.pattern)
        except re.error:
            problems.append(FieldViolation(f"{path}.pattern", "not a valid pattern", "BAD_PATTERN"))
    return PropertyRule(
        name=message.name,
        type=message.type,
        required=message.required,
        allowed_values=frozenset(message.allowed_values),
        minimum=message.minimum if has_min else None,
        maximum=message.maximum if has_max else None,
        max_length=message.max_length,
        personal=message.personal,
        pattern=pattern,
    )


def _purpose(value: str, path: str, problems: list[FieldViolation]) -> None:
    if value and not PURPOSE_NAME.fullmatch(value):
        problems.append(FieldViolation(path, "a purpose name: a-z, 0-9 and _", "BAD_PURPOSE"))


def plan_from_proto(message: admin_pb2.TrackingPlan) -> TrackingPlan:
    """The checked plan; raises InvalidArgument with one violation per bad rule, each named
    by its path (``plan.events[2].properties[0].maximum``)."""
    problems: list[FieldViolation] = []
    if not SOURCE_ID.fullmatch(message.source_id):
        problems.append(
            FieldViolation(
                "plan.source_id", "1..64 of a-z, 0-9, '-' and '_'", "SOURCE_ID_MALFORMED"
            )
        )
    if message.unplanned_events not in _POLICIES:
        problems.append(FieldViolation("plan.unplanned_events", "unknown policy", "UNKNOWN_POLICY"))
    if len(message.events) > MAX_RULES:
        problems.append(FieldViolation("plan.events", f"at most {MAX_RULES} rules", "TOO_MANY"))
    _purpose(message.default_collection_purpose, "plan.default_collection_purpose", problems)
    events: dict[str, EventRule] = {}
    for i, rule in enumerate(message.events[:MAX_RULES]):
        path = f"plan.events[{i}]"
        if not rule.event or len(rule.event) > 200:
            problems.append(FieldViolation(f"{path}.event", "1..200 characters", "REQUIRED"))
        elif rule.event in events:
            problems.append(FieldViolation(f"{path}.event", "named twice", "DUPLICATE"))
        if rule.unplanned_properties not in _POLICIES:
            problems.append(
                FieldViolation(f"{path}.unplanned_properties", "unknown policy", "UNKNOWN_POLICY")
            )
        _purpose(rule.collection_purpose, f"{path}.collection_purpose", problems)
        seen: set[str] = set()
        properties = []
        for j, prop in enumerate(rule.properties[:MAX_RULES]):
            if prop.name in seen:
                problems.append(
                    FieldViolation(f"{path}.properties[{j}].name", "named twice", "DUPLICATE")
                )
            seen.add(prop.name)
            properties.append(_property(prop, f"{path}.properties[{j}]", problems))
        events[rule.event] = EventRule(
            event=rule.event,
            properties=tuple(properties),
            unplanned_properties=rule.unplanned_properties or ACCEPT_FLAGGED,
            collection_purpose=rule.collection_purpose,
        )
    quality = _quality(message.quality, "plan.quality", problems)
    if problems:
        raise InvalidArgument(f"the tracking plan has {len(problems)} problem(s)", problems)
    return TrackingPlan(
        source_id=message.source_id,
        version=message.version,
        events=events,
        unplanned_events=message.unplanned_events or ACCEPT_FLAGGED,
        default_collection_purpose=message.default_collection_purpose,
        quality=quality,
        description=message.description,
    )


def plan_to_proto(plan: TrackingPlan) -> admin_pb2.TrackingPlan:
    """The protobuf form of a checked plan (for listings and round trips)."""
    message = admin_pb2.TrackingPlan(
        source_id=plan.source_id,
        version=plan.version,
        unplanned_events=plan.unplanned_events,  # type: ignore[arg-type]
        default_collection_purpose=plan.default_collection_purpose,
        description=plan.description,
    )
    for rule in plan.events.values():
        entry = message.events.add(
            event=rule.event,
            unplanned_properties=rule.unplanned_properties,
            collection_purpose=rule.collection_purpose,
        )
        for prop in rule.properties:
            added = entry.properties.add(
                name=prop.name,
                type=prop.type,
                required=prop.required,
                allowed_values=sorted(prop.allowed_values),
                max_length=prop.max_length,
                personal=prop.personal,
                pattern=prop.pattern.pattern if prop.pattern else "",
            )
            if prop.minimum is not None:
                added.minimum = prop.minimum
            if prop.maximum is not None:
                added.maximum = prop.maximum
    q, d = plan.quality, DEFAULT_QUALITY
    if q != d:
        message.quality.max_clock_skew.FromTimedelta(q.max_clock_skew)
        message.quality.max_event_age.FromTimedelta(q.max_event_age)
        message.quality.min_age, message.quality.max_age = q.min_age, q.max_age
        message.quality.max_properties = q.max_properties
        message.quality.max_string_length = q.max_string_length
        message.quality.max_event_bytes = q.max_event_bytes
    return message
