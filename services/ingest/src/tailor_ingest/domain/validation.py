"""Is an event fit to keep? One reason per offending field, and the event normalised.

``validate_event`` reads a ``CustomerEvent`` as it arrived and returns a :class:`Verdict`:
errors (the event is rejected), warnings (accepted but flagged) and the consent purpose
its collection needs. It also normalises the event in place: a missing timestamp becomes
now, client clock skew is corrected with ``sent_at``, query strings and fragments are cut
from page paths and referrers are reduced to their host, properties the plan marks personal
move to ``personal_properties`` (traits to ``identify.personal_traits``), and unplanned
properties are dropped under the DROP policy. Descriptions never repeat a personal value.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import pycountry
from google.protobuf.struct_pb2 import Struct, Value

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2
from tailor_ingest.domain.personal import personal_fields
from tailor_ingest.domain.plan import (
    DEFAULT_QUALITY,
    DROP,
    REJECT,
    EventRule,
    PropertyRule,
    TrackingPlan,
    collection_purpose,
)
from tailor_ingest.domain.vocabulary import PAYLOAD_EVENTS

R = events_pb2.ValidationReason
MAX_ID = 128
MAX_EVENT_NAME = 200
SKEW_FLAG_SECONDS = 1.0
#: Issues kept per event and the longest field path: a hostile event must not make its own
#: rejection (stored, published, returned) huge.
MAX_ISSUES = 50
MAX_PATH = 200
_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)
_TIMEZONES = frozenset(zoneinfo.available_timezones())
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_AMOUNT = re.compile(r"-?\d{1,18}(?:\.\d{1,6})?")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+")
_PHONE = re.compile(r"\+?[\d\s().-]{7,25}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_TYPE_NAMES: dict[int, str] = {int(v): k for k, v in admin_pb2.PropertyType.items()}


@dataclass
class Verdict:
    """What validation found; ``rejected`` when there is at least one error."""

    event_name: str
    purpose: str = ""
    errors: list[events_pb2.FieldIssue] = field(default_factory=list)
    warnings: list[events_pb2.FieldIssue] = field(default_factory=list)
    #: The event's personal values with their paths, once validation got that far.
    personal: list[tuple[str, common_pb2.PersonalField]] | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.errors)

    def error(self, path: str, reason: Any, description: str) -> None:
        if len(self.errors) >= MAX_ISSUES:
            return
        path = path if len(path) <= MAX_PATH else path[: MAX_PATH - 1] + "…"
        self.errors.append(
            events_pb2.FieldIssue(field=path, reason=reason, description=description)
        )

    def warn(self, path: str, reason: Any, description: str) -> None:
        if len(self.warnings) >= MAX_ISSUES:
            return
        path = path if len(path) <= MAX_PATH else path[: MAX_PATH - 1] + "…"
        self.warnings.append(
            events_pb2.FieldIssue(field=path, reason=reason, description=description)
        )


def derive_message_id(event: events_pb2.CustomerEvent) -> str:
    """An id from the event's content, so an identical retry of an id-less event repeats it."""
    copy = events_pb2.CustomerEvent()
    copy.CopyFrom(event)
    copy.message_id = ""
    copy.source_id = ""
    copy.ClearField("sent_at")
    digest = hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
    return f"d-{digest[:40]}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bad_id(value: str) -> bool:
    """Too long for an id, or holding a control character."""
    return len(value) > MAX_ID or _CONTROL.search(value) is not None


def _moment(stamp: Any) -> datetime | None:
    try:
        moment: datetime = stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment


def event_name(event: events_pb2.CustomerEvent) -> tuple[str, str]:
    """(name used in plans, name shown in rejections): ("Order Completed",
    "track:Order Completed") for a track, ("identify", "identify") otherwise."""
    kind = event.WhichOneof("kind") or ""
    if kind == "track":
        return event.track.event, f"track:{event.track.event}"
    return kind, kind


def validate_event(
    event: events_pb2.CustomerEvent,
    plan: TrackingPlan | None,
    *,
    now: datetime,
    expected_kind: str | None = None,
) -> Verdict:
    """Check and normalise ``event`` (in place) against ``plan`` and the built-in rules."""
    plan_name, shown = event_name(event)
    verdict = Verdict(event_name=shown, purpose=collection_purpose(plan, plan_name))
    quality = plan.quality if plan is not None else DEFAULT_QUALITY
    kind = event.WhichOneof("kind")
    if kind is None:
        verdict.error("kind", R.VALIDATION_REASON_KIND_MISMATCH, "no event kind is set")
    elif expected_kind and kind != expected_kind:
        verdict.error("kind", R.VALIDATION_REASON_KIND_MISMATCH, f"{kind} sent to {expected_kind}")
    _identity(event, verdict)
    if event.ByteSize() > quality.max_event_bytes:
        verdict.error(
            "event", R.VALIDATION_REASON_EVENT_TOO_LARGE, f"over {quality.max_event_bytes} bytes"
        )
        return verdict  # do not spend time walking an oversized event
    _times(event, verdict, now, quality.max_clock_skew, quality.max_event_age)
    _context(event, verdict)
    if kind == "track":
        _track(event.track, verdict)
    elif kind == "identify":
        _identify(event.identify, verdict, quality.min_age, quality.max_age)
    elif kind == "page":
        _page(event.page, verdict)
    elif kind == "group" and not event.group.group_id:
        verdict.error("group.group_id", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required")
    elif kind == "alias":
        if not event.alias.previous_id:
            verdict.error(
                "alias.previous_id", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required"
            )
        elif bad_id(event.alias.previous_id):
            verdict.error("alias.previous_id", R.VALIDATION_REASON_ID_MALFORMED, "malformed id")
        if not event.user_id:
            verdict.error(
                "user_id", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "alias needs user_id"
            )
    container, prefix = _properties_of(event)
    _sizes(event, container, prefix, verdict, quality.max_properties, quality.max_string_length)
    if kind is not None:
        _plan(event, plan, plan_name, container, prefix, verdict)
    # Last, so that properties the plan made personal are among them.
    verdict.personal = _personal(event, verdict, quality.max_string_length)
    return verdict


def _identity(event: events_pb2.CustomerEvent, verdict: Verdict) -> None:
    if bad_id(event.message_id) or not event.message_id.isprintable():
        verdict.error(
            "message_id", R.VALIDATION_REASON_ID_MALFORMED, "at most 128 printable characters"
        )
    if not event.user_id and not event.anonymous_id:
        verdict.error(
            "user_id", R.VALIDATION_REASON_MISSING_IDENTITY, "set user_id or anonymous_id"
        )
    for name in ("user_id", "anonymous_id"):
        if bad_id(getattr(event, name)):
            verdict.error(
                name,
                R.VALIDATION_REASON_ID_MALFORMED,
                "at most 128 characters, no control characters",
            )


def _times(
    event: events_pb2.CustomerEvent,
    verdict: Verdict,
    now: datetime,
    max_skew: timedelta,
    max_age: timedelta,
) -> None:
    if not event.HasField("timestamp"):
        event.timestamp.FromDatetime(now)
        return
    moment = _moment(event.timestamp)
    if moment is None:
        reason = (
            R.VALIDATION_REASON_TIMESTAMP_TOO_OLD
            if event.timestamp.seconds < 0
            else R.VALIDATION_REASON_TIMESTAMP_IN_FUTURE
        )
        verdict.error("timestamp", reason, "not a date-time of any calendar")
        return
    sent = _moment(event.sent_at) if event.HasField("sent_at") else None
    if sent is not None:
        skew = now - sent  # how far the client's clock runs behind ours
        if abs(skew.total_seconds()) > SKEW_FLAG_SECONDS:
            try:
                moment += skew
                event.timestamp.FromDatetime(moment)
            except (OverflowError, ValueError):
                verdict.error("timestamp", R.VALIDATION_REASON_TIMESTAMP_TOO_OLD, "out of range")
                return
            verdict.warn(
                "timestamp",
                R.VALIDATION_REASON_TIMESTAMP_CLOCK_SKEW_CORRECTED,
                f"corrected by {skew.total_seconds():.1f} s using sent_at",
            )
    if moment > now + max_skew:
        verdict.error("timestamp", R.VALIDATION_REASON_TIMESTAMP_IN_FUTURE, "lies in the future")
    elif now - max_age > _EARLIEST and moment < now - max_age:
        verdict.error(
            "timestamp", R.VALIDATION_REASON_TIMESTAMP_TOO_OLD, f"older than {max_age.days} days"
        )


def _context(event: events_pb2.CustomerEvent, verdict: Verdict) -> None:
    if not event.HasField("context"):
        return
    context = event.context
    if context.locale and not _LANGUAGE_TAG.fullmatch(context.locale):
        verdict.error("context.locale", R.VALIDATION_REASON_CODE_UNKNOWN, "not a BCP 47 locale")
    if context.timezone and context.timezone not in _TIMEZONES:
        verdict.error("context.timezone", R.VALIDATION_REASON_CODE_UNKNOWN, "not an IANA time zone")
    country = context.location.country
    if country and country not in _COUNTRIES:
        verdict.error(
            "context.location.country", R.VALIDATION_REASON_CODE_UNKNOWN, "not an ISO 3166-1 code"
        )


def _personal(
    event: events_pb2.CustomerEvent, verdict: Verdict, max_length: int
) -> list[tuple[str, common_pb2.PersonalField]]:
    found = list(personal_fields(event))
    for path, value in found:
        form = value.WhichOneof("value")
        if form == "encrypted":
            verdict.error(
                path,
                R.VALIDATION_REASON_PERSONAL_FIELD_PRE_ENCRYPTED,
                "send personal values in plain text",
            )
        elif form == "plaintext" and len(value.plaintext) > max_length:
            verdict.error(path, R.VALIDATION_REASON_VALUE_TOO_LONG, f"over {max_length} characters")
    return found


def _money(
    money: common_pb2.Money, path: str, verdict: Verdict, *, negative_ok: bool = False
) -> None:
    if not money.amount and not money.currency:
        return
    if not _AMOUNT.fullmatch(money.amount):
        verdict.error(
            f"{path}.amount",
            R.VALIDATION_REASON_AMOUNT_MALFORMED,
            "a decimal with at most 6 places",
        )
    elif not negative_ok and money.amount.startswith("-") and Decimal(money.amount) != 0:
        verdict.error(f"{path}.amount", R.VALIDATION_REASON_NEGATIVE_AMOUNT, "must not be negative")
    if money.currency not in _CURRENCIES:
        verdict.error(
            f"{path}.currency", R.VALIDATION_REASON_CURRENCY_UNKNOWN, "not an ISO 4217 code"
        )


def _product(product: events_pb2.Product, path: str, verdict: Verdict) -> None:
    if not product.product_id:
        verdict.error(f"{path}.product_id", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required")
    elif bad_id(product.product_id):
        verdict.error(f"{path}.product_id", R.VALIDATION_REASON_ID_MALFORMED, "malformed id")
    if product.quantity < 0:
        verdict.error(
            f"{path}.quantity", R.VALIDATION_REASON_NEGATIVE_QUANTITY, "must not be negative"
        )
    if product.HasField("price"):
        _money(product.price, f"{path}.price", verdict)


def _track(track: events_pb2.Track, verdict: Verdict) -> None:
    if not track.event:
        verdict.error("track.event", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required")
    elif len(track.event) > MAX_EVENT_NAME:
        verdict.error("track.event", R.VALIDATION_REASON_VALUE_TOO_LONG, "at most 200 characters")
    payload = track.WhichOneof("payload")
    if payload is None:
        return
    if track.event not in PAYLOAD_EVENTS[payload]:
        verdict.error(
            f"track.{payload}",
            R.VALIDATION_REASON_PAYLOAD_MISMATCH,
            f"a {payload} payload does not fit this event",
        )
    if payload == "product":
        if track.product.HasField("product"):
            _product(track.product.product, "track.product.product", verdict)
        else:
            verdict.error(
                "track.product.product", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required"
            )
    elif payload == "order":
        order = track.order
        if not order.order_id:
            verdict.error(
                "track.order.order_id", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required"
            )
        elif bad_id(order.order_id):
            verdict.error("track.order.order_id", R.VALIDATION_REASON_ID_MALFORMED, "malformed id")
        for index, product in enumerate(order.products):
            _product(product, f"track.order.products[{index}]", verdict)
        for name in ("revenue", "total", "shipping", "tax", "discount"):
            if order.HasField(name):
                _money(getattr(order, name), f"track.order.{name}", verdict)
    elif payload == "support":
        if not 0 <= track.support.satisfaction <= 5:
            verdict.error(
                "track.support.satisfaction",
                R.VALIDATION_REASON_VALUE_OUT_OF_RANGE,
                "1..5, or 0 when not given",
            )
        if track.support.duration_seconds < 0:
            verdict.error(
                "track.support.duration_seconds",
                R.VALIDATION_REASON_VALUE_OUT_OF_RANGE,
                "must not be negative",
            )
    elif payload == "search":
        if track.search.results < 0:
            verdict.error(
                "track.search.results",
                R.VALIDATION_REASON_VALUE_OUT_OF_RANGE,
                "must not be negative",
            )
        if len(track.search.result_product_ids) > 50:
            verdict.error(
                "track.search.result_product_ids",
                R.VALIDATION_REASON_TOO_MANY_PROPERTIES,
                "at most 50",
            )
    elif payload == "app" and track.app.action == events_pb2.APP_ACTION_UNSPECIFIED:
        verdict.error("track.app.action", R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required")


def _identify(identify: events_pb2.Identify, verdict: Verdict, min_age: int, max_age: int) -> None:
    email = identify.email.plaintext if identify.HasField("email") else ""
    if email and not _EMAIL.fullmatch(email):
        verdict.error(
            "identify.email", R.VALIDATION_REASON_EMAIL_MALFORMED, "not an e-mail address"
        )
    phone = identify.phone.plaintext if identify.HasField("phone") else ""
    if phone and (not _PHONE.fullmatch(phone) or not 7 <= sum(c.isdigit() for c in phone) <= 15):
        verdict.error("identify.phone", R.VALIDATION_REASON_PHONE_MALFORMED, "not a phone number")
    birthday = identify.birthday.plaintext if identify.HasField("birthday") else ""
    if birthday and not _is_date(birthday):
        verdict.error("identify.birthday", R.VALIDATION_REASON_DATE_MALFORMED, "YYYY-MM-DD")
    demographics = identify.demographics
    if demographics.age and not min_age <= demographics.age <= max_age:
        verdict.error(
            "identify.demographics.age",
            R.VALIDATION_REASON_AGE_IMPLAUSIBLE,
            f"outside {min_age}..{max_age}",
        )
    if demographics.country and demographics.country not in _COUNTRIES:
        verdict.error(
            "identify.demographics.country",
            R.VALIDATION_REASON_CODE_UNKNOWN,
            "not an ISO 3166-1 code",
        )
    if demographics.language and not _LANGUAGE_TAG.fullmatch(demographics.language):
        verdict.error(
            "identify.demographics.language", R.VALIDATION_REASON_CODE_UNKNOWN, "not a BCP 47 tag"
        )


def _page(page: events_pb2.Page, verdict: Verdict) -> None:
    for cut in ("?", "#"):
        if cut in page.path:
            page.path = page.path.split(cut, 1)[0]
            verdict.warn(
                "page.path", R.VALIDATION_REASON_QUERY_STRING_DROPPED, "query or fragment removed"
            )
            break
    referrer = page.referrer
    if referrer and any(c in referrer for c in "/?#"):
        host = urlsplit(referrer).hostname if "//" in referrer else referrer.split("/", 1)[0]
        page.referrer = (host or "").split("?", 1)[0].split("#", 1)[0]
        verdict.warn(
            "page.referrer", R.VALIDATION_REASON_QUERY_STRING_DROPPED, "reduced to its host"
        )


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _properties_of(event: events_pb2.CustomerEvent) -> tuple[Struct, str]:
    kind = event.WhichOneof("kind")
    if kind == "identify":
        return event.identify.traits, "identify.traits"
    if kind == "group":
        return event.group.traits, "group.traits"
    return event.properties, "properties"


def _long_strings(value: Value, path: str, limit: int, depth: int = 0) -> list[str]:
    which = value.WhichOneof("kind")
    if which == "string_value":
        return [path] if len(value.string_value) > limit else []
    if depth > 32:
        return [path]  # nested deeper than anyone means: too much
    if which == "struct_value":
        return [
            p
            for k, v in value.struct_value.fields.items()
            for p in _long_strings(v, f"{path}.{k}", limit, depth + 1)
        ]
    if which == "list_value":
        return [
            p
            for i, v in enumerate(value.list_value.values)
            for p in _long_strings(v, f"{path}[{i}]", limit, depth + 1)
        ]
    return []


def _sizes(
    event: events_pb2.CustomerEvent,
    container: Struct,
    prefix: str,
    verdict: Verdict,
    max_properties: int,
    max_length: int,
) -> None:
    count = len(container.fields) + len(event.personal_properties)
    if prefix == "properties" and event.WhichOneof("kind") in ("identify", "group"):
        count = len(container.fields)
    if len(event.properties.fields) + len(event.personal_properties) > max_properties:
        verdict.error(
            "properties", R.VALIDATION_REASON_TOO_MANY_PROPERTIES, f"more than {max_properties}"
        )
    elif count > max_properties:
        verdict.error(
            prefix, R.VALIDATION_REASON_TOO_MANY_PROPERTIES, f"more than {max_properties}"
        )
    for key, value in container.fields.items():
        for path in _long_strings(value, f"{prefix}.{key}", max_length):
            verdict.error(
                path,
                R.VALIDATION_REASON_VALUE_TOO_LONG,
                f"over {max_length} characters or nested too deep",
            )


def _lookup(container: Struct, name: str) -> Value | None:
    value: Value | None = None
    fields = container.fields
    for part in name.split("."):
        if part not in fields:
            return None
        value = fields[part]
        nested = value.WhichOneof("kind") == "struct_value"
        fields = value.struct_value.fields if nested else {}  # type: ignore[assignment]
    return value


def _as_text(value: Value) -> str:
    which = value.WhichOneof("kind")
    if which == "string_value":
        return value.string_value
    if which == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else repr(number)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    return json.dumps(_plain(value), sort_keys=True)


def _plain(value: Value) -> Any:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(value)


def _type_fits(value: Value, wanted: int) -> tuple[bool, int]:
    """(fits, reason when not)."""
    which = value.WhichOneof("kind")
    T = admin_pb2
    if wanted == T.PROPERTY_TYPE_UNSPECIFIED:
        return True, 0
    if wanted == T.PROPERTY_TYPE_STRING:
        return which == "string_value", R.VALIDATION_REASON_WRONG_TYPE
    if wanted == T.PROPERTY_TYPE_NUMBER:
        return which == "number_value", R.VALIDATION_REASON_WRONG_TYPE
    if wanted == T.PROPERTY_TYPE_INTEGER:
        return (
            which == "number_value" and value.number_value.is_integer(),
            R.VALIDATION_REASON_WRONG_TYPE,
        )
    if wanted == T.PROPERTY_TYPE_BOOLEAN:
        return which == "bool_value", R.VALIDATION_REASON_WRONG_TYPE
    if wanted == T.PROPERTY_TYPE_ARRAY:
        return which == "list_value", R.VALIDATION_REASON_WRONG_TYPE
    if wanted == T.PROPERTY_TYPE_OBJECT:
        return which == "struct_value", R.VALIDATION_REASON_WRONG_TYPE
    if which != "string_value":
        return False, R.VALIDATION_REASON_WRONG_TYPE
    text = value.string_value
    if wanted == T.PROPERTY_TYPE_DATE:
        return _is_date(text), R.VALIDATION_REASON_DATE_MALFORMED
    if wanted == T.PROPERTY_TYPE_DECIMAL:
        return bool(_AMOUNT.fullmatch(text)), R.VALIDATION_REASON_AMOUNT_MALFORMED
    if wanted == T.PROPERTY_TYPE_TIMESTAMP:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return False, R.VALIDATION_REASON_WRONG_TYPE
        return moment.tzinfo is not None, R.VALIDATION_REASON_WRONG_TYPE
    return True, 0


def _number(value: Value) -> float | None:
    which = value.WhichOneof("kind")
    if which == "number_value":
        return value.number_value
    if which == "string_value":
        try:
            return float(Decimal(value.string_value))
        except (InvalidOperation, ValueError, OverflowError):
            return None
    return None


def _check_rule(rule: PropertyRule, value: Value, path: str, verdict: Verdict) -> None:
    fits, reason = _type_fits(value, rule.type)
    if not fits:
        verdict.error(
            path, reason, f"must be {_TYPE_NAMES[rule.type].removeprefix('PROPERTY_TYPE_').lower()}"
        )
        return
    text = _as_text(value)
    if rule.allowed_values and text not in rule.allowed_values:
        verdict.error(path, R.VALIDATION_REASON_VALUE_NOT_ALLOWED, "not one of the plan's values")
    if rule.minimum is not None or rule.maximum is not None:
        number = _number(value)
        if (
            number is None
            or (rule.minimum is not None and number < rule.minimum)
            or (rule.maximum is not None and number > rule.maximum)
        ):
            verdict.error(path, R.VALIDATION_REASON_VALUE_OUT_OF_RANGE, "outside the plan's range")
    if value.WhichOneof("kind") == "string_value":
        if rule.max_length and len(text) > rule.max_length:
            verdict.error(
                path, R.VALIDATION_REASON_VALUE_TOO_LONG, f"over {rule.max_length} characters"
            )
        if rule.pattern is not None and not rule.pattern.fullmatch(text):
            verdict.error(
                path, R.VALIDATION_REASON_PATTERN_MISMATCH, "does not match the plan's pattern"
            )


def _plan(
    event: events_pb2.CustomerEvent,
    plan: TrackingPlan | None,
    name: str,
    container: Struct,
    prefix: str,
    verdict: Verdict,
) -> None:
    field_name = "track.event" if event.WhichOneof("kind") == "track" else "kind"
    rule: EventRule | None = plan.events.get(name) if plan is not None else None
    if rule is None:
        if plan is not None and plan.unplanned_events == REJECT:
            verdict.error(
                field_name, R.VALIDATION_REASON_EVENT_NOT_IN_PLAN, "not in the source's plan"
            )
        else:
            verdict.warn(
                field_name, R.VALIDATION_REASON_EVENT_NOT_IN_PLAN, "not in the source's plan"
            )
        return
    for prop in rule.properties:
        path = f"{prefix}.{prop.name}"
        value = _lookup(container, prop.name)
        if value is None or value.WhichOneof("kind") == "null_value":
            if prop.required:
                verdict.error(
                    path, R.VALIDATION_REASON_REQUIRED_FIELD_MISSING, "required by the plan"
                )
            continue
        _check_rule(prop, value, path, verdict)
        if prop.personal and "." not in prop.name:
            _make_personal(event, container, prop.name, value)
    known = rule.top_level_names
    for key in list(container.fields):
        if key in known:
            continue
        path = f"{prefix}.{key}"
        if rule.unplanned_properties == REJECT:
            verdict.error(path, R.VALIDATION_REASON_PROPERTY_NOT_IN_PLAN, "not in the plan's rule")
        elif rule.unplanned_properties == DROP:
            del container.fields[key]
            verdict.warn(
                path, R.VALIDATION_REASON_PROPERTY_NOT_IN_PLAN, "not in the plan's rule; dropped"
            )
        else:
            verdict.warn(path, R.VALIDATION_REASON_PROPERTY_NOT_IN_PLAN, "not in the plan's rule")


def _make_personal(
    event: events_pb2.CustomerEvent, container: Struct, key: str, value: Value
) -> None:
    """Move a plain property the plan marks personal to where ingest seals personal values."""
    text = value.string_value if value.WhichOneof("kind") == "string_value" else _as_text(value)
    target = (
        event.identify.personal_traits
        if event.WhichOneof("kind") == "identify"
        else event.personal_properties
    )
    target[key].plaintext = text
    del container.fields[key]
