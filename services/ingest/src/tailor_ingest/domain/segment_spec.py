"""Segment's HTTP tracking API messages (JSON) as Tailor customer events.

Existing analytics libraries send Segment-spec JSON; this turns one message into a
``CustomerEvent`` without judging it (validation is the same as for gRPC afterwards). Only
a message that cannot be read at all — not an object, a field of an impossible type — is
refused here, with the path of the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.struct_pb2 import Struct

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_ingest.domain.vocabulary import APP_ACTIONS, ORDER_EVENTS, PRODUCT_EVENTS

KINDS = ("track", "identify", "page", "screen", "group", "alias")
#: Traits that are personal values in the Segment spec, by their Identify field.
_PERSONAL_TRAITS = {
    "email": "email",
    "name": "name",
    "phone": "phone",
    "address": "address",
    "birthday": "birthday",
    "firstName": "first_name",
    "lastName": "last_name",
}
_DEFAULT_CURRENCY = "USD"  # the Segment spec's default when a message names none


@dataclass(frozen=True, slots=True)
class SpecError(Exception):
    """A message that cannot be read: ``field`` is its JSON path."""

    field: str
    description: str


def _text(value: Any, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SpecError(path, "must be a string")
    return str(value)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


def _time(value: Any, path: str, target: Any) -> None:
    if value is None or value == "":
        return
    if not isinstance(value, str):
        raise SpecError(path, "must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError("no offset")
        target.FromDatetime(moment)
    except (ValueError, OverflowError):
        raise SpecError(path, "must be an ISO 8601 date-time with an offset") from None


def _money(value: Any, currency: str, path: str) -> common_pb2.Money | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(path, "must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise SpecError(path, "must be a number") from None
    return common_pb2.Money(amount=format(amount.normalize(), "f"), currency=currency)


def _int(value: Any, path: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise SpecError(path, "must be a whole number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SpecError(path, "must be a whole number") from None
    if number != number.to_integral_value() or abs(number) >= 2**63:
        raise SpecError(path, "must be a whole number")
    return int(number)


def _struct(values: Mapping[str, Any], path: str) -> Struct:
    struct = Struct()
    try:
        # Through JSON so that only JSON values (no NaN, no arbitrary objects) get in.
        struct.update(json.loads(json.dumps(dict(values), allow_nan=False)))
    except (TypeError, ValueError):
        raise SpecError(path, "must hold JSON values only") from None
    return struct


def _personal(value: Any, path: str) -> common_pb2.PersonalField | None:
    text = _text(value, path)
    return common_pb2.PersonalField(plaintext=text) if text else None


def _product(props: Mapping[str, Any], currency: str, path: str) -> events_pb2.Product:
    product = events_pb2.Product(
        product_id=_text(props.get("product_id", props.get("id")), f"{path}.product_id"),
        sku=_text(props.get("sku"), f"{path}.sku"),
        name=_text(props.get("name"), f"{path}.name"),
        category=_text(props.get("category"), f"{path}.category"),
        brand=_text(props.get("brand"), f"{path}.brand"),
        quantity=_int(props.get("quantity"), f"{path}.quantity"),
        variant=_text(props.get("variant"), f"{path}.variant"),
        position=max(-(2**31), min(2**31 - 1, _int(props.get("position"), f"{path}.position"))),
        coupon=_text(props.get("coupon"), f"{path}.coupon"),
    )
    price = _money(props.get("price"), currency, f"{path}.price")
    if price is not None:
        product.price.CopyFrom(price)
    return product


def _track(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    name = _text(message.get("event"), "event")
    props = _object(message.get("properties"), "properties")
    track = event.track
    track.event = name
    currency = _text(props.get("currency"), "properties.currency") or _DEFAULT_CURRENCY
    used: set[str] = set()
    if name in PRODUCT_EVENTS:
        track.product.product.CopyFrom(_product(props, currency, "properties"))
        track.product.cart_id = _text(props.get("cart_id"), "properties.cart_id")
        track.product.list_id = _text(props.get("list_id"), "properties.list_id")
        used = {
            "product_id",
            "id",
            "sku",
            "name",
            "category",
            "brand",
            "quantity",
            "variant",
            "position",
            "coupon",
            "price",
            "currency",
            "cart_id",
            "list_id",
        }
    elif name in ORDER_EVENTS:
        order = track.order
        order.order_id = _text(
            props.get("order_id", props.get("checkout_id")), "properties.order_id"
        )
        order.checkout_id = _text(props.get("checkout_id"), "properties.checkout_id")
        order.affiliation = _text(props.get("affiliation"), "properties.affiliation")
        order.coupon = _text(props.get("coupon"), "properties.coupon")
        for field in ("revenue", "total", "shipping", "tax", "discount"):
            money = _money(props.get(field), currency, f"properties.{field}")
            if money is not None:
                getattr(order, field).CopyFrom(money)
        products = props.get("products")
        products = [] if products is None else products
        if not isinstance(products, list):
            raise SpecError("properties.products", "must be a list")
        for index, item in enumerate(products):
            line = _object(item, f"properties.products[{index}]")
            order.products.append(_product(line, currency, f"properties.products[{index}]"))
        used = {
            "order_id",
            "checkout_id",
            "affiliation",
            "coupon",
            "revenue",
            "total",
            "shipping",
            "tax",
            "discount",
            "products",
            "currency",
        }
    elif name == "Products Searched":
        query = _personal(props.get("query"), "properties.query")
        if query is not None:
            track.search.query.CopyFrom(query)
        else:
            track.search.SetInParent()
        used = {"query"}
    elif name in APP_ACTIONS:
        app = track.app
        app.action = APP_ACTIONS[name]
        app.version = _text(props.get("version"), "properties.version")
        app.previous_version = _text(props.get("previous_version"), "properties.previous_version")
        app.from_background = bool(props.get("from_background", False))
        app.referring_application = _text(
            props.get("referring_application"), "properties.referring_application"
        )
        used = {"version", "previous_version", "from_background", "referring_application"}
    rest = {k: v for k, v in props.items() if k not in used}
    if rest:
        event.properties.CopyFrom(_struct(rest, "properties"))


def _identify(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    traits = dict(_object(message.get("traits"), "traits"))
    identify = event.identify
    for key, field in _PERSONAL_TRAITS.items():
        value = traits.pop(key, None)
        if key == "address" and isinstance(value, Mapping):
            value = "\n".join(str(v) for v in value.values() if v)
        personal = _personal(value, f"traits.{key}")
        if personal is not None:
            getattr(identify, field).CopyFrom(personal)
    demographics = identify.demographics
    age = traits.pop("age", None)
    if age is not None:
        demographics.age = max(-(2**31), min(2**31 - 1, _int(age, "traits.age")))
    demographics.gender = _text(traits.pop("gender", None), "traits.gender")
    if not any((demographics.age, demographics.gender)):
        identify.ClearField("demographics")
    if traits:
        identify.traits.CopyFrom(_struct(traits, "traits"))


def _page(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    props = dict(_object(message.get("properties"), "properties"))
    page = event.page
    page.name = _text(message.get("name") or props.pop("name", None), "name")
    page.category = _text(message.get("category") or props.pop("category", None), "category")
    page.path = _text(props.pop("path", None), "properties.path")
    referrer = _text(props.pop("referrer", None), "properties.referrer")
    page.referrer = (urlsplit(referrer).hostname or "") if "//" in referrer else referrer
    page.title = _text(props.pop("title", None), "properties.title")
    props.pop("url", None)  # the full URL can carry personal data in its query; path is kept
    props.pop("search", None)
    if props:
        event.properties.CopyFrom(_struct(props, "properties"))


def _screen(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    props = dict(_object(message.get("properties"), "properties"))
    event.screen.name = _text(message.get("name") or props.pop("name", None), "name")
    event.screen.category = _text(
        message.get("category") or props.pop("category", None), "category"
    )
    if props:
        event.properties.CopyFrom(_struct(props, "properties"))


def _group(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    event.group.group_id = _text(message.get("groupId"), "groupId")
    traits = _object(message.get("traits"), "traits")
    if traits:
        event.group.traits.CopyFrom(_struct(traits, "traits"))


def _alias(message: Mapping[str, Any], event: events_pb2.CustomerEvent) -> None:
    event.alias.previous_id = _text(message.get("previousId"), "previousId")


_KIND_READERS: dict[str, Callable[[Mapping[str, Any], events_pb2.CustomerEvent], None]] = {
    "track": _track,
    "identify": _identify,
    "page": _page,
    "screen": _screen,
    "group": _group,
    "alias": _alias,
}


def _context(raw: Mapping[str, Any], context: Any) -> None:
    device = _object(raw.get("device"), "context.device")
    context.device_type = _text(device.get("type"), "context.device.type")
    context.device_model = " ".join(
        filter(
            None, (_text(device.get(k), f"context.device.{k}") for k in ("manufacturer", "model"))
        )
    )
    os_ = _object(raw.get("os"), "context.os")
    context.os_name = _text(os_.get("name"), "context.os.name")
    context.os_version = _text(os_.get("version"), "context.os.version")
    app = _object(raw.get("app"), "context.app")
    context.app_name = _text(app.get("name"), "context.app.name")
    context.app_version = _text(app.get("version"), "context.app.version")
    context.app_build = _text(app.get("build"), "context.app.build")
    context.locale = _text(raw.get("locale"), "context.locale")
    context.timezone = _text(raw.get("timezone"), "context.timezone")
    context.channel = _text(raw.get("channel"), "context.channel")
    location = _object(raw.get("location"), "context.location")
    context.location.country = _text(location.get("country"), "context.location.country")
    context.location.region = _text(location.get("region"), "context.location.region")
    context.location.city = _text(location.get("city"), "context.location.city")
    if not (context.location.country or context.location.region or context.location.city):
        context.ClearField("location")
    if location.get("latitude") is not None and location.get("longitude") is not None:
        lat = _text(location.get("latitude"), "context.location.latitude")
        lon = _text(location.get("longitude"), "context.location.longitude")
        context.precise_location.plaintext = f"{lat},{lon}"
    campaign = _object(raw.get("campaign"), "context.campaign")
    for key, value in campaign.items():
        context.campaign[str(key).removeprefix("utm_")] = _text(value, f"context.campaign.{key}")
    for source, field in (("ip", "ip"), ("userAgent", "user_agent")):
        personal = _personal(raw.get(source), f"context.{source}")
        if personal is not None:
            getattr(context, field).CopyFrom(personal)
    device_id = _personal(device.get("advertisingId") or device.get("id"), "context.device.id")
    if device_id is not None:
        context.device_id.CopyFrom(device_id)
    library = _object(raw.get("library"), "context.library")
    name = _text(library.get("name"), "context.library.name")
    version = _text(library.get("version"), "context.library.version")
    context.library = f"{name}/{version}" if version else name


def from_segment(message: Any, kind: str | None = None) -> events_pb2.CustomerEvent:
    """The customer event a Segment-spec message describes; ``kind`` comes from the endpoint
    (``/v1/track``), else from the message's ``type`` (``/v1/batch``)."""
    body = _object(message, "")
    kind = kind or _text(body.get("type"), "type")
    if kind not in _KIND_READERS:
        raise SpecError("type", f"must be one of {', '.join(KINDS)}")
    event = events_pb2.CustomerEvent(
        message_id=_text(body.get("messageId"), "messageId"),
        user_id=_text(body.get("userId"), "userId"),
        anonymous_id=_text(body.get("anonymousId"), "anonymousId"),
    )
    _time(body.get("timestamp") or body.get("originalTimestamp"), "timestamp", event.timestamp)
    _time(body.get("sentAt"), "sentAt", event.sent_at)
    raw_context = _object(body.get("context"), "context")
    if raw_context:
        _context(raw_context, event.context)
    _KIND_READERS[kind](body, event)
    return event
