"""Every personal value of an event is found, wherever the contract puts it."""

from __future__ import annotations

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_ingest.domain.personal import personal_fields


def _personal(text: str) -> common_pb2.PersonalField:
    return common_pb2.PersonalField(plaintext=text)


def test_identify_context_and_custom_personal_values_are_all_found() -> None:
    event = events_pb2.CustomerEvent(
        user_id="u1",
        identify=events_pb2.Identify(
            email=_personal("a@example.com"),
            phone=_personal("+441234567890"),
            personal_traits={"nickname": _personal("Ada")},
            interests=["outdoor"],
        ),
        personal_properties={"note": _personal("call after 5")},
    )
    event.context.ip.plaintext = "203.0.113.7"
    event.context.locale = "en-GB"
    paths = [path for path, _ in personal_fields(event)]
    assert sorted(paths) == [
        "context.ip",
        "identify.email",
        "identify.personal_traits.nickname",
        "identify.phone",
        "personal_properties.note",
    ]


def test_free_text_inside_track_payloads_is_found() -> None:
    support = events_pb2.CustomerEvent(
        track=events_pb2.Track(
            event="Support Ticket Opened",
            support=events_pb2.SupportInteraction(transcript=_personal("my address is…")),
        )
    )
    search = events_pb2.CustomerEvent(
        track=events_pb2.Track(
            event="Products Searched", search=events_pb2.SearchEvent(query=_personal("ada"))
        )
    )
    assert [p for p, _ in personal_fields(support)] == ["track.support.transcript"]
    assert [p for p, _ in personal_fields(search)] == ["track.search.query"]


def test_an_order_holds_no_personal_values() -> None:
    order = events_pb2.CustomerEvent(
        user_id="u1",
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id="1", products=[events_pb2.Product(product_id="p", name="Mug")]
            ),
        ),
    )
    assert list(personal_fields(order)) == []


def test_the_found_value_is_the_one_in_the_event() -> None:
    event = events_pb2.CustomerEvent(identify=events_pb2.Identify(email=_personal("x@y.z")))
    [(_, value)] = list(personal_fields(event))
    value.plaintext = "changed"
    assert event.identify.email.plaintext == "changed"
