"""Segment-spec JSON messages read as Tailor customer events."""

from __future__ import annotations

from typing import Any

import pytest

from tailor.events.v1 import events_pb2
from tailor_ingest.domain.segment_spec import SpecError, from_segment


def test_an_identify_puts_personal_traits_in_personal_fields() -> None:
    event = from_segment(
        {
            "type": "identify",
            "userId": 42,
            "anonymousId": "a-1",
            "timestamp": "2026-11-25T10:00:00Z",
            "traits": {
                "email": "ada@example.com",
                "firstName": "Ada",
                "address": {"street": "1 Loop Rd", "city": "London"},
                "age": 36,
                "plan": "pro",
            },
        }
    )
    assert (event.user_id, event.anonymous_id) == ("42", "a-1")
    identify = event.identify
    assert identify.email.plaintext == "ada@example.com"
    assert identify.first_name.plaintext == "Ada"
    assert identify.address.plaintext == "1 Loop Rd\nLondon"
    assert identify.demographics.age == 36
    assert dict(identify.traits) == {"plan": "pro"}
    assert event.timestamp.ToJsonString() == "2026-11-25T10:00:00Z"


def test_a_product_event_becomes_a_typed_payload() -> None:
    event = from_segment(
        {
            "type": "track",
            "event": "Product Added",
            "properties": {"product_id": "85123A", "price": "2.55", "quantity": 2, "cart_id": "c1"},
        }
    )
    product = event.track.product
    assert (product.product.product_id, product.product.price.amount) == ("85123A", "2.55")
    assert product.product.price.currency == "USD"  # the spec's default currency
    assert product.cart_id == "c1"


def test_an_unknown_track_keeps_its_properties_and_an_app_event_its_action() -> None:
    other = from_segment({"type": "track", "event": "Video Played", "properties": {"s": 3}})
    assert other.track.WhichOneof("payload") is None
    assert dict(other.properties) == {"s": 3}
    app = from_segment({"type": "track", "event": "Application Opened"})
    assert app.track.app.action == events_pb2.APP_ACTION_OPENED


def test_context_maps_to_tailors_context_with_personal_parts_sealed_later() -> None:
    event = from_segment(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {
                "path": "/p",
                "referrer": "https://ref.example/x?q=1",
                "url": "https://s/p?e=a@b",
            },
            "context": {
                "ip": "203.0.113.1",
                "userAgent": "Mozilla",
                "device": {"type": "mobile", "manufacturer": "Apple", "model": "iPhone15,2"},
                "location": {"country": "GB", "latitude": 51.5, "longitude": -0.1},
                "campaign": {"utm_source": "news", "medium": "email"},
            },
        }
    )
    assert (event.page.path, event.page.referrer) == ("/p", "ref.example")
    assert "url" not in event.properties  # a full URL can carry personal data
    context = event.context
    assert context.ip.plaintext == "203.0.113.1"
    assert context.precise_location.plaintext == "51.5,-0.1"
    assert context.device_model == "Apple iPhone15,2"
    assert dict(context.campaign) == {"source": "news", "medium": "email"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ([], ""),
        ({"type": "shout"}, "type"),
        ({"type": "track", "properties": []}, "properties"),
        ({"type": "track", "timestamp": "yesterday"}, "timestamp"),
        (
            {"type": "track", "event": "Order Completed", "properties": {"products": {}}},
            "properties.products",
        ),
        (
            {"type": "track", "event": "Product Added", "properties": {"quantity": 1.5}},
            "properties.quantity",
        ),
        ({"type": "identify", "traits": {"email": {"x": 1}}}, "traits.email"),
        ({"type": "track", "properties": {"x": float("nan")}}, "properties"),
    ],
)
def test_an_unreadable_message_names_the_field(message: Any, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        from_segment(message)
    assert caught.value.field == field
