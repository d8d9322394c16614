"""Profile state: per-event figures, and order independence of events and merges."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_core.errors import InvalidArgument
from tailor_profile.domain.conditions import Op, parse_condition
from tailor_profile.domain.population import (
    Buyer,
    Observation,
    cohort_statistics,
    impute,
    rfm_scores,
)
from tailor_profile.domain.state import Projector, merge_states, new_state
from tailor_profile.domain.view import computed_view, flatten

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
PROJECTOR = Projector("GBP")


def _track(name: str, when: datetime, **payload: object) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(user_id="u1", track=events_pb2.Track(event=name, **payload))  # type: ignore[arg-type]
    event.timestamp.FromDatetime(when)
    return event


def _order(
    order_id: str, amount: str, when: datetime, name: str = "Order Completed"
) -> events_pb2.CustomerEvent:
    return _track(
        name,
        when,
        order=events_pb2.OrderEvent(
            order_id=order_id,
            revenue=common_pb2.Money(amount=amount, currency="GBP"),
            products=[events_pb2.Product(product_id="p1", category="Home/Kitchen", quantity=1)],
        ),
    )


def _added(product: str, when: datetime) -> events_pb2.CustomerEvent:
    return _track(
        "Product Added",
        when,
        product=events_pb2.ProductEvent(
            product=events_pb2.Product(
                product_id=product,
                quantity=2,
                price=common_pb2.Money(amount="3.50", currency="GBP"),
            )
        ),
    )


def _identify(age: int, when: datetime) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        user_id="u1", identify=events_pb2.Identify(demographics=events_pb2.Demographics(age=age))
    )
    event.timestamp.FromDatetime(when)
    return event


EVENTS = [
    _order("o1", "10.00", NOW - timedelta(days=40)),
    _order("o2", "20.50", NOW - timedelta(days=3)),
    _order("o2r", "5.00", NOW - timedelta(days=2), "Order Refunded"),
    _added("p9", NOW - timedelta(hours=5)),
    _added("p1", NOW - timedelta(days=10)),
    _identify(30, NOW - timedelta(days=5)),
    _identify(31, NOW - timedelta(days=1)),
]


def _apply(events: list[tuple[int, events_pb2.CustomerEvent]]) -> dict[str, object]:
    state = new_state()
    for index, event in events:
        PROJECTOR.apply(state, event, f"e{index}", NOW)
    return state


def test_figures_of_a_known_sequence() -> None:
    view = computed_view(_apply(list(enumerate(EVENTS))), NOW, "GBP", None)
    assert view["orders_lifetime"] == 2
    assert view["orders_30d"] == 1
    assert view["refunds_lifetime"] == 1
    assert view["revenue_lifetime"]["amount"] == "25.50"
    assert view["revenue_30d"]["amount"] == "15.50"
    assert view["average_order_value"]["amount"] == "12.75"
    # p1 was added 10 days ago and bought 3 days ago; p9 stays in the cart.
    assert view["open_cart"]["product_ids"] == ["p9"]
    assert view["open_cart"]["items"] == 2
    assert view["open_cart"]["value"]["amount"] == "7.00"
    assert view["favourite_categories"][0]["value"] == "Home/Kitchen"
    counts = {c["event"]: c for c in view["event_counts"]}
    assert counts["Order Completed"]["lifetime"] == 2
    assert counts["Order Completed"]["last_7d"] == 1


def test_the_most_recent_value_wins_and_the_late_one_is_reported_lost() -> None:
    state = new_state()
    PROJECTOR.apply(state, _identify(31, NOW - timedelta(days=1)), "late-but-newer", NOW)
    applied = PROJECTOR.apply(state, _identify(30, NOW - timedelta(days=5)), "older", NOW)
    assert state["traits"]["demographics.age"]["v"] == 31
    [write] = [w for w in applied.trait_writes if w.name == "demographics.age"]
    assert not write.won


def test_windows_move_with_the_clock_without_new_events() -> None:
    state = _apply(list(enumerate(EVENTS)))
    later = computed_view(state, NOW + timedelta(days=8), "GBP", None)
    assert later["orders_30d"] == 1
    assert {c["event"]: c["last_7d"] for c in later["event_counts"]}["Order Completed"] == 0


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(enumerate(EVENTS))))
def test_the_same_events_in_any_order_give_the_same_profile(
    order: list[tuple[int, events_pb2.CustomerEvent]],
) -> None:
    expected = flatten(computed_view(_apply(list(enumerate(EVENTS))), NOW, "GBP", None))
    assert flatten(computed_view(_apply(order), NOW, "GBP", None)) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2), min_size=len(EVENTS), max_size=len(EVENTS)),
    st.permutations([0, 1, 2]),
)
def test_merges_in_any_order_give_the_same_profile(
    owners: list[int], merge_order: list[int]
) -> None:
    """Events spread over three profiles, merged in any order, equal one profile of all."""
    parts = [new_state() for _ in range(3)]
    for index, (owner, event) in enumerate(zip(owners, EVENTS, strict=True)):
        PROJECTOR.apply(parts[owner], event, f"e{index}", NOW)
    survivor = copy.deepcopy(parts[merge_order[0]])
    for other in merge_order[1:]:
        merge_states(survivor, copy.deepcopy(parts[other]), NOW)
    whole = _apply(list(enumerate(EVENTS)))
    assert flatten(computed_view(survivor, NOW, "GBP", None)) == flatten(
        computed_view(whole, NOW, "GBP", None)
    )
    assert survivor["traits"] == whole["traits"]


def test_rfm_quintiles_rank_buyers() -> None:
    buyers = [
        Buyer(
            f"b{i}",
            NOW - timedelta(days=100 - i * 10),
            i + 1,
            __import__("decimal").Decimal(i * 10),
        )
        for i in range(10)
    ]
    scores = rfm_scores(buyers, NOW)
    assert scores["b9"]["recency"] == 5
    assert scores["b9"]["label"] == "champions"
    assert scores["b0"]["frequency"] == 1
    assert scores["b0"]["label"] == "hibernating"


def test_imputation_uses_the_cohort_and_never_overrides_an_observed_value() -> None:
    observations = [Observation("GB", {"demographics.age": age}) for age in (20, 30, 40, 50, 60)]
    stats = cohort_statistics(observations)
    assert impute({}, "GB", stats) == {"demographics.age": 40}
    assert impute({"demographics.age": 22}, "GB", stats) == {}
    assert impute({}, "FR", stats) == {}


@pytest.mark.parametrize(
    ("trait", "op", "value", "field"),
    [
        ("nope", "EQ", 1, "conditions[0].trait"),
        ("email", "EQ", "a@b.c", "conditions[0].trait"),
        ("computed.orders_30d", "CONTAINS", "1", "conditions[0].op"),
        ("computed.orders_30d", "GT", "lots", "conditions[0].value"),
        ("computed.last_order_at", "WITHIN_LAST", None, "conditions[0].duration"),
    ],
)
def test_malformed_conditions_name_the_field(
    trait: str, op: str, value: object, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_condition(0, trait, op, value, None)
    assert error.value.field_violations[0].field == field


def test_a_family_trait_condition_parses() -> None:
    condition = parse_condition(0, "computed.event_counts.Product Viewed.last_7d", "GE", 2, None)
    assert condition.op == Op.GE
