"""The two example segments of the issue on the real-data sample (UCI Online Retail,
2010-2011), evaluated at the end of the data set so that their windows hold real events:
membership equals what the file alone says."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tailor.events.v1 import events_pb2
from tailor_cli.importing import uci
from tailor_segment.domain.evaluation import EventFact, SubjectFacts, evaluate, event_fact
from tailor_segment.domain.rule_text import parse

SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"
PRODUCT = "85123A"  # WHITE HANGING HEART T-LIGHT HOLDER, the shop's best seller


def _accepted_orders() -> list[events_pb2.CustomerEvent]:
    return list(uci.accepted_events(SAMPLE))


def _members(text: str, events: list[events_pb2.CustomerEvent], now: datetime) -> set[str]:
    facts: dict[str, list[EventFact]] = defaultdict(list)
    for event in events:
        fact = event_fact(event)
        assert fact is not None
        facts[event.user_id or event.anonymous_id].append(fact)
    rule = parse(text)
    return {
        subject
        for subject, found in facts.items()
        if evaluate(rule, SubjectFacts({}, sorted(found, key=lambda f: f.at)), now).member
    }


def test_bought_product_x_in_the_last_week_matches_the_file() -> None:
    events = _accepted_orders()
    end = max(e.timestamp.ToDatetime(tzinfo=uci.SHOP_TIME) for e in events) + timedelta(seconds=1)
    expected = {
        e.user_id or e.anonymous_id
        for e in events
        if e.track.event == "Order Completed"
        and any(p.product_id == PRODUCT for p in e.track.order.products)
        and e.timestamp.ToDatetime(tzinfo=uci.SHOP_TIME) > end - timedelta(days=7)
    }
    assert expected, "the sample's last week has buyers of the product"
    got = _members(
        f'event "Order Completed" where product.product_id = "{PRODUCT}" count >= 1 within 7d',
        events,
        end,
    )
    assert got == expected


def test_spent_more_than_100_in_30_days_matches_the_file() -> None:
    events = _accepted_orders()
    end = max(e.timestamp.ToDatetime(tzinfo=uci.SHOP_TIME) for e in events) + timedelta(seconds=1)
    spent: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        if e.track.event == "Order Completed" and e.timestamp.ToDatetime(
            tzinfo=uci.SHOP_TIME
        ) > end - timedelta(days=30):
            spent[e.user_id or e.anonymous_id] += Decimal(e.track.order.revenue.amount)
    expected = {subject for subject, total in spent.items() if total > 100}
    assert expected, "some spent more than 100"
    assert len(expected) < len(spent), "and some did not"
    got = _members('event "Order Completed" sum order.revenue.amount > 100 within 30d', events, end)
    assert got == expected
