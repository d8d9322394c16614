"""Evaluating rules on hand-built facts, the exactness of changes_at, and event_fact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_segment.domain.evaluation import (
    EventFact,
    SubjectFacts,
    Verdict,
    evaluate,
    event_fact,
)
from tailor_segment.domain.rule_text import parse

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _facts(*events: EventFact, **traits: object) -> SubjectFacts:
    return SubjectFacts(traits=traits, events=list(events))


def _viewed(at: datetime, product_id: str = "85123A") -> EventFact:
    return EventFact("Product Viewed", at, {"product.product_id": product_id})


def _verdict(text: str, facts: SubjectFacts, now: datetime = NOW) -> Verdict:
    return evaluate(parse(text), facts, now)


# --- event conditions ---------------------------------------------------------------------

VIEWED_ONCE_A_DAY = (
    'event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h'
)


def test_count_in_window_holds_until_the_last_event_leaves_it() -> None:
    facts = _facts(
        _viewed(NOW - timedelta(hours=20)),
        _viewed(NOW - timedelta(hours=2)),
        _viewed(NOW - timedelta(hours=1), product_id="71053"),
    )
    verdict = _verdict(VIEWED_ONCE_A_DAY, facts)
    assert verdict.member
    assert verdict.reason == 'count of "Product Viewed" = 2 >= 1 within 24h'
    leaves_at = NOW - timedelta(hours=2) + timedelta(hours=24)
    assert verdict.changes_at == leaves_at
    assert _verdict(VIEWED_ONCE_A_DAY, facts, leaves_at - MICROSECOND).member
    after = _verdict(VIEWED_ONCE_A_DAY, facts, leaves_at)
    assert not after.member
    assert after.changes_at is None


def test_an_event_exactly_one_window_old_has_left_it() -> None:
    facts = _facts(_viewed(NOW - timedelta(hours=24)))
    assert not _verdict(VIEWED_ONCE_A_DAY, facts).member


def test_a_future_dated_event_counts_once_its_time_comes() -> None:
    soon = NOW + timedelta(minutes=5)
    verdict = _verdict(VIEWED_ONCE_A_DAY, _facts(_viewed(soon)))
    assert not verdict.member
    assert verdict.changes_at == soon


def test_upper_bounds_become_true_when_enough_events_leave() -> None:
    text = 'event "Product Viewed" count < 2 within 6h'
    facts = _facts(*(_viewed(NOW - timedelta(hours=h)) for h in (1, 3, 5)))
    verdict = _verdict(text, facts)
    assert not verdict.member
    # The 5h-old view leaves after 1h (2 remain); the 3h-old one after 3h (1 remains).
    assert verdict.changes_at == NOW + timedelta(hours=3)
    assert not _verdict(text, facts, NOW + timedelta(hours=1)).member
    assert _verdict(text, facts, NOW + timedelta(hours=3)).member


def _order(at: datetime, amount: float, *product_ids: str) -> EventFact:
    return EventFact(
        "Order Completed",
        at,
        {"order.revenue.amount": amount, "product.product_id": list(product_ids)},
    )


def test_sum_of_revenue_over_a_window_with_a_filter_on_line_items() -> None:
    facts = _facts(
        _order(NOW - timedelta(days=40), 500.0, "85123A"),
        _order(NOW - timedelta(days=10), 60.0, "85123A", "71053"),
        _order(NOW - timedelta(days=5), 50.5, "85123A"),
        _order(NOW - timedelta(days=1), 999.0, "22423"),
    )
    text = (
        'event "Order Completed" where product.product_id = "85123A" '
        "sum order.revenue.amount > 100 within 30d"
    )
    verdict = _verdict(text, facts)
    assert verdict.member
    assert verdict.reason == (
        'sum of order.revenue.amount over "Order Completed" = 110.5 > 100 within 30d'
    )
    assert verdict.changes_at == NOW + timedelta(days=20)


def test_lifetime_conditions_never_expire() -> None:
    verdict = _verdict(
        'event "Product Viewed" count >= 1', _facts(_viewed(NOW - timedelta(days=900)))
    )
    assert verdict.member
    assert verdict.changes_at is None


# --- absence ------------------------------------------------------------------------------


def test_absence_starts_when_the_last_event_leaves_the_window() -> None:
    facts = _facts(_viewed(NOW - timedelta(days=6)), _viewed(NOW - timedelta(days=2)))
    text = 'absent "Product Viewed" within 7d'
    verdict = _verdict(text, facts)
    assert not verdict.member
    assert verdict.changes_at == NOW + timedelta(days=5)
    later = _verdict(text, facts, NOW + timedelta(days=5))
    assert later.member
    assert later.reason == 'no "Product Viewed" within 7d'
    assert _verdict(text, _facts()).member


# --- sequences ----------------------------------------------------------------------------


def _added(at: datetime, product_id: str) -> EventFact:
    return EventFact("Product Added", at, {"product.product_id": product_id})


def test_sequence_needs_the_second_event_within_the_time_and_correlated() -> None:
    text = (
        'sequence "Product Added" then "Order Completed" within 2h correlate on product.product_id'
    )
    added = _added(NOW - timedelta(hours=5), "85123A")
    late = _order(NOW - timedelta(hours=2), 10.0, "85123A")
    other = _order(NOW - timedelta(hours=4), 10.0, "71053")
    assert not _verdict(text, _facts(added, late, other)).member
    bought = _order(NOW - timedelta(hours=4), 10.0, "71053", "85123A")
    verdict = _verdict(text, _facts(added, bought))
    assert verdict.member
    assert verdict.changes_at is None


def test_sequence_window_limits_the_first_event() -> None:
    text = 'sequence "Product Added" then "Order Completed" within 2h window 1d'
    facts = _facts(
        _added(NOW - timedelta(hours=10), "x"), _order(NOW - timedelta(hours=9), 1.0, "x")
    )
    verdict = _verdict(text, facts)
    assert verdict.member
    assert verdict.changes_at == NOW + timedelta(hours=14)


ABANDONED_CART = 'sequence "Product Added" then not "Order Completed" within 2h'


def test_abandoned_cart_enters_when_the_time_runs_out() -> None:
    added = _added(NOW - timedelta(minutes=30), "85123A")
    verdict = _verdict(ABANDONED_CART, _facts(added))
    assert not verdict.member
    assert verdict.changes_at == added.at + timedelta(hours=2)
    assert not _verdict(ABANDONED_CART, _facts(added), verdict.changes_at - MICROSECOND).member
    entered = _verdict(ABANDONED_CART, _facts(added), verdict.changes_at)
    assert entered.member
    assert "not followed by" in entered.reason


def test_abandoned_cart_is_left_when_the_order_arrives() -> None:
    added = _added(NOW - timedelta(hours=3), "85123A")
    assert _verdict(ABANDONED_CART, _facts(added)).member
    ordered = _order(NOW - timedelta(hours=2, minutes=30), 10.0, "85123A")
    assert not _verdict(ABANDONED_CART, _facts(added, ordered)).member
    # An order after the time ran out settles the cart too: the subject entered at 2 h and
    # leaves when the late order arrives.
    late = _order(NOW - timedelta(minutes=30), 10.0, "85123A")
    assert _verdict(ABANDONED_CART, _facts(added, late), late.at - MICROSECOND).member
    assert not _verdict(ABANDONED_CART, _facts(added, late)).member


def test_abandoned_cart_with_a_window_expires() -> None:
    text = ABANDONED_CART + " window 1d"
    added = _added(NOW - timedelta(hours=3), "85123A")
    verdict = _verdict(text, _facts(added))
    assert verdict.member
    assert verdict.changes_at == added.at + timedelta(days=1)


# --- traits, segments, clusters ---------------------------------------------------------------


def test_trait_comparisons_follow_the_common_proto() -> None:
    facts = _facts(
        **{
            "computed.orders_lifetime": 5,
            "interests": ["outdoor", "cooking"],
            "last_order_at": "2026-11-29T13:00:00+02:00",
            "newsletter": True,
        }
    )
    cases = {
        "trait computed.orders_lifetime >= 3": True,
        "trait computed.orders_lifetime = 5": True,
        "trait computed.orders_lifetime in [1, 5]": True,
        "trait missing != 1": True,
        'trait missing not in ["a"]': True,
        "trait missing not exists": True,
        "trait missing > 1": False,
        'trait interests contains "outdoor"': True,
        'trait interests contains "out"': False,
        'trait last_order_at < "2026-11-29T12:00:00Z"': True,  # 11:00 UTC
        "trait last_order_at within last 2h": True,
        "trait last_order_at before last 2h": False,
        "trait newsletter = true": True,
        "trait newsletter = 1": False,
        "trait missing = null": True,
    }
    for text, expected in cases.items():
        assert _verdict(text, facts).member is expected, text


def test_trait_within_last_expires_with_the_clock() -> None:
    facts = _facts(last_seen="2026-11-29T10:00:00Z")
    verdict = _verdict("trait last_seen within last 7d", facts)
    assert verdict.member
    assert verdict.changes_at == datetime(2026, 12, 6, 10, tzinfo=UTC)
    assert verdict.reason == 'last_seen = "2026-11-29T10:00:00Z" within last 7d'


def test_combinations_with_segments_and_clusters() -> None:
    facts = SubjectFacts(
        traits={"computed.orders_lifetime": 4},
        events=[],
        segments=frozenset({"vip"}),
        clusters={"run-1": 3},
    )
    verdict = _verdict('trait computed.orders_lifetime >= 3 and not in segment "vip"', facts)
    assert not verdict.member
    assert verdict.reason == 'in segment "vip"'
    assert _verdict('in cluster "run-1" 3 or in segment "none"', facts).member
    assert not _verdict('in cluster "run-1" 2', facts).member


# --- changes_at is exact --------------------------------------------------------------------

PROPERTY_RULES = [
    'event "A" count >= 2 within 1h',
    'event "A" count < 2 within 1h',
    'event "A" sum properties.value > 3 within 2h',
    'event "A" count = 1 within 30m',
    'absent "B" within 1h',
    'sequence "A" then "B" within 30m window 2h',
    'sequence "A" then not "B" within 30m',
    'sequence "A" then not "B" within 20m window 1h correlate on properties.key',
    "trait seen within last 1h",
    "trait seen before last 30m",
    'event "A" count >= 1 within 1h and not absent "B" within 30m',
    'absent "A" within 15m or sequence "B" then not "A" within 10m',
]

facts_strategy = st.lists(
    st.builds(
        lambda name, minutes, value, key: EventFact(
            name,
            NOW + timedelta(minutes=minutes),
            {"properties.value": value, "properties.key": key},
        ),
        st.sampled_from(["A", "B"]),
        st.integers(-180, 30),
        st.integers(0, 3),
        st.sampled_from(["x", "y"]),
    ),
    max_size=8,
)


@settings(max_examples=400)
@given(
    st.sampled_from(PROPERTY_RULES),
    facts_strategy,
    st.integers(-120, 0).map(lambda m: NOW + timedelta(minutes=m)),
)
def test_nothing_changes_before_changes_at(
    text: str, events: list[EventFact], seen: datetime
) -> None:
    rule = parse(text)
    facts = SubjectFacts(traits={"seen": seen.isoformat()}, events=events)
    now = evaluate(rule, facts, NOW)
    if now.changes_at is None:
        for hours in (1, 3, 10, 1000):
            assert evaluate(rule, facts, NOW + timedelta(hours=hours)).member == now.member
        return
    assert now.changes_at > NOW
    just_before = evaluate(rule, facts, now.changes_at - MICROSECOND)
    assert (just_before.member, just_before.changes_at) == (now.member, now.changes_at)
    # Leaves change exactly then; a composite may find it was only a child that changed.
    if " and " not in text and " or " not in text:
        assert evaluate(rule, facts, now.changes_at).member != now.member


# --- event_fact -----------------------------------------------------------------------------


def _money(amount: str) -> common_pb2.Money:
    return common_pb2.Money(amount=amount, currency="GBP")


def _personal(text: str) -> common_pb2.PersonalField:
    return common_pb2.PersonalField(plaintext=text)


def _customer_event(**kind: object) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        user_id="u1",
        context=common_pb2.Context(
            device_type="mobile",
            location=common_pb2.CoarseLocation(country="GB", city="London"),
            campaign={"source": "newsletter"},
            ip=_personal("203.0.113.9"),
            precise_location=_personal("51.5,-0.12"),
        ),
        **kind,  # type: ignore[arg-type]
    )
    event.timestamp.FromDatetime(NOW)
    return event


def test_order_event_gives_lists_per_line_item_path_and_money_as_floats() -> None:
    order = events_pb2.OrderEvent(
        order_id="o-1",
        revenue=_money("110.50"),
        products=[
            events_pb2.Product(product_id="85123A", price=_money("10.00"), quantity=2),
            events_pb2.Product(product_id="71053", price=_money("90.50"), quantity=1),
        ],
    )
    event = _customer_event(track=events_pb2.Track(event="Order Completed", order=order))
    event.properties.update({"colour": "red", "gift": {"wrapped": True}})
    fact = event_fact(event)
    assert fact is not None
    assert (fact.name, fact.at) == ("Order Completed", NOW)
    assert fact.fields["order.order_id"] == "o-1"
    assert fact.fields["order.revenue.amount"] == 110.5
    assert fact.fields["order.revenue.currency"] == "GBP"
    assert fact.fields["product.product_id"] == ["85123A", "71053"]
    assert fact.fields["product.price.amount"] == [10.0, 90.5]
    assert fact.fields["properties.colour"] == "red"
    assert fact.fields["properties.gift.wrapped"] is True
    assert fact.fields["context.device_type"] == "mobile"
    assert fact.fields["context.location.city"] == "London"
    assert fact.fields["context.campaign.source"] == "newsletter"
    assert not any(path.startswith(("context.ip", "context.precise")) for path in fact.fields)

    rule = parse(
        'event "Order Completed" where product.product_id = "71053" and properties.colour '
        '= "red" sum order.revenue.amount > 100'
    )
    assert evaluate(rule, SubjectFacts({}, [fact]), NOW).member


def test_product_event_reads_as_product_paths() -> None:
    product = events_pb2.ProductEvent(
        product=events_pb2.Product(product_id="85123A", category="Home/Kitchen"), cart_id="c1"
    )
    fact = event_fact(
        _customer_event(track=events_pb2.Track(event="Product Added", product=product))
    )
    assert fact is not None
    assert fact.fields["product.product_id"] == "85123A"
    assert fact.fields["product.cart_id"] == "c1"
    assert evaluate(
        parse(VIEWED_ONCE_A_DAY.replace("Viewed", "Added")), SubjectFacts({}, [fact]), NOW
    ).member


def test_personal_fields_never_reach_a_fact() -> None:
    identify = events_pb2.Identify(
        email=_personal("ann@example.com"),
        name=_personal("Ann"),
        phone=_personal("+441234"),
        demographics=events_pb2.Demographics(age=34, country="GB"),
        interests=["outdoor"],
        preferences={"size": "M"},
        personal_traits={"nickname": _personal("annie")},
        traits=struct_pb2.Struct(),
    )
    identify.traits.update({"plan": "gold"})
    event = _customer_event(identify=identify)
    event.personal_properties["note"].plaintext = "call Ann"
    fact = event_fact(event)
    assert fact is not None
    assert fact.name == "identify"
    assert fact.fields["identify.demographics.age"] == 34
    assert fact.fields["identify.interests"] == ["outdoor"]
    assert fact.fields["identify.preferences.size"] == "M"
    assert fact.fields["identify.traits.plan"] == "gold"
    text = repr(fact.fields)
    for secret in ("ann@example.com", "Ann", "+441234", "annie", "203.0.113.9", "51.5"):
        assert secret not in text


def test_call_kinds_and_meaningful_zeros() -> None:
    page = event_fact(_customer_event(page=events_pb2.Page(path="/products/85123A")))
    assert page is not None
    assert (page.name, page.fields["page.path"]) == ("page", "/products/85123A")
    search = events_pb2.SearchEvent(query=_personal("red mug"), category="Kitchen")
    fact = event_fact(
        _customer_event(track=events_pb2.Track(event="Products Searched", search=search))
    )
    assert fact is not None
    assert fact.fields["search.results"] == 0
    assert "search.query" not in fact.fields
    app = events_pb2.AppLifecycle(action=events_pb2.APP_ACTION_OPENED)
    opened = event_fact(
        _customer_event(track=events_pb2.Track(event="Application Opened", app=app))
    )
    assert opened is not None
    assert opened.fields["app.action"] == "opened"
    assert opened.fields["app.from_background"] is False


def test_events_without_kind_time_or_name_give_no_fact() -> None:
    assert event_fact(events_pb2.CustomerEvent(user_id="u1")) is None
    assert event_fact(_customer_event(track=events_pb2.Track(event=""))) is None
    untimed = events_pb2.CustomerEvent(user_id="u1", page=events_pb2.Page(path="/"))
    assert event_fact(untimed) is None
