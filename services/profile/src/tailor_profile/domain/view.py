"""What a profile state says at a given moment: computed traits and the flat trait map.

The computed view has the field names of ``tailor.profile.v1.ComputedTraits`` (so it turns
into the protobuf message with ``json_format.ParseDict``), and :func:`flatten` turns it
into the ``computed.*`` names that FindProfiles conditions and segment rules use.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tailor_profile.domain.state import (
    FAVOURITE_HALF_LIFE,
    WEIGHT_EPOCH,
    State,
    iso,
    parse_iso,
)

TOP_K = 5
WINDOWS = (7, 30)


def _window_start(now: datetime, days: int) -> str:
    """First day (ISO date) inside a window of ``days`` days ending today."""
    return (now.astimezone(UTC).date() - timedelta(days=days - 1)).isoformat()


def _money(amount: Decimal | str, currency: str) -> dict[str, str]:
    value = Decimal(amount)
    return {"amount": f"{value.quantize(Decimal('0.01'))}", "currency": currency}


def computed_view(
    state: State, now: datetime, currency: str, rfm: dict[str, Any] | None
) -> dict[str, Any]:
    """ComputedTraits (as a dict) of ``state`` at ``now``."""
    start7, start30 = _window_start(now, 7), _window_start(now, 30)
    days = state["days"]
    in30 = {d: b for d, b in days.items() if d >= start30}
    in7 = {d: b for d, b in in30.items() if d >= start7}
    life = state["life"]
    counts = [
        {
            "event": name,
            "last_7d": sum(b["ev"].get(name, 0) for b in in7.values()),
            "last_30d": sum(b["ev"].get(name, 0) for b in in30.values()),
            "lifetime": total,
        }
        for name, total in sorted(life["ev"].items())
    ]
    revenue = Decimal(life["rev"])
    orders = life["orders"]
    view: dict[str, Any] = {
        "event_counts": counts,
        "sessions_30d": sum(1 for day in state["sessions"].values() if day >= start30),
        "sessions_lifetime": life["sessions"],
        "orders_30d": sum(b["orders"] for b in in30.values()),
        "orders_lifetime": orders,
        "revenue_30d": _money(
            sum((Decimal(b["rev"]) for b in in30.values()), Decimal(0)), currency
        ),
        "revenue_lifetime": _money(revenue, currency),
        "average_order_value": _money(revenue / orders if orders > 0 else Decimal(0), currency),
        "refunds_lifetime": life["refunds"],
        "favourite_categories": _favourites(state, "category"),
        "favourite_brands": _favourites(state, "brand"),
        "engagement_rate_30d": round(
            len({d for d in state["sessions"].values() if d >= start30} | set(in30)) / 30, 4
        ),
        "support": _support(state, in30),
        "social_engagements_30d": sum(b["soc"] for b in in30.values()),
        "computed_at": iso(now),
    }
    if state["last_order_at"]:
        view["last_order_at"] = state["last_order_at"]
    if rfm:
        view["rfm"] = rfm
    cart = open_cart(state, currency)
    if cart:
        view["open_cart"] = cart
    if state["last_context"]:
        view["last_context"] = _last_context(state["last_context"])
    return view


def _favourites(state: State, field: str) -> list[dict[str, Any]]:
    marks = state["interest"][field]
    if not marks or not state["last_seen"]:
        return []
    # Weights are stored grown from a fixed origin; bring them to the latest event's scale.
    scale = 2.0 ** (-((parse_iso(state["last_seen"]) - WEIGHT_EPOCH) / FAVOURITE_HALF_LIFE))
    ranked = sorted(marks.items(), key=lambda item: (-item[1][1], item[0]))[:TOP_K]
    return [
        {"value": value, "score": round(weight * scale, 6), "count": count}
        for value, (count, weight) in ranked
    ]


def open_cart(state: State, currency: str) -> dict[str, Any] | None:
    lines = {
        pid: m
        for pid, m in state["cart"].items()
        if m["add"] is not None and (m["rm"] is None or m["rm"] < m["add"])
    }
    if not lines:
        return None
    value = sum(
        (Decimal(m.get("price", "0")) * m.get("qty", 1) for m in lines.values()), Decimal(0)
    )
    return {
        "product_ids": sorted(lines),
        "items": sum(m.get("qty", 1) for m in lines.values()),
        "value": _money(value, currency),
        "since": min(m["add"] for m in lines.values()),
    }


def _support(state: State, in30: dict[str, Any]) -> dict[str, Any]:
    life = state["life"]
    summary: dict[str, Any] = {
        "interactions_30d": sum(b["sup"] for b in in30.values()),
        "interactions_lifetime": life["support"],
        "average_satisfaction": round(life["sat_sum"] / life["sat_n"], 4) if life["sat_n"] else 0,
    }
    last = state["last_support"]
    if last:
        summary.update(
            last_topic=last["topic"], last_outcome=last["outcome"], last_interaction_at=last["at"]
        )
    return summary


def _last_context(last: dict[str, Any]) -> dict[str, Any]:
    context = {k: last[k] for k in ("device_type", "os_name", "channel", "locale", "timezone")}
    context["location"] = dict(last["location"])
    context["at"] = last["at"]
    context["local_hour"] = local_hour(parse_iso(last["at"]), last["timezone"])
    return context


def local_hour(moment: datetime, timezone: str) -> int:
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return moment.astimezone(zone).hour


def flatten(view: dict[str, Any], prefix: str = "computed") -> dict[str, Any]:
    """``{"computed.orders_30d": 3, "computed.event_counts.Order Completed.lifetime": 9, …}``."""
    flat: dict[str, Any] = {}
    for key, value in view.items():
        name = f"{prefix}.{key}"
        if key == "event_counts":
            for count in value:
                for window in ("last_7d", "last_30d", "lifetime"):
                    flat[f"{name}.{count['event']}.{window}"] = count[window]
        elif key in ("favourite_categories", "favourite_brands"):
            flat[name] = [item["value"] for item in value]
        elif key == "open_cart":
            flat[f"{name}.items"] = value["items"]
            flat[f"{name}.value.amount"] = value["value"]["amount"]
            flat[f"{name}.since"] = value["since"]
        elif key == "computed_at":
            continue
        elif isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def next_window_change(state: State, now: datetime) -> datetime | None:
    """When the next windowed figure changes without a new event (a day leaves a window)."""
    today = now.astimezone(UTC).date()
    candidates = []
    days = set(state["days"]) | set(state["sessions"].values())
    for day_text in days:
        day = datetime.fromisoformat(day_text).date()
        for window in WINDOWS:
            leaves = day + timedelta(days=window)
            if leaves > today:
                candidates.append(leaves)
    if not candidates:
        return None
    first = min(candidates)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)
