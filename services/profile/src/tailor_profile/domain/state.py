"""A profile's state and how each customer event changes it.

The state is a JSON document (stored as jsonb) of accumulators, not of final figures:
counters, per-day buckets, latest-by-time values and per-product cart marks. Every update
is a sum, a maximum or "the value with the latest (time, event id)", so applying the same
events in another order — as a replay does across partitions, or a merge of two profiles
built apart — yields the same state. Windowed figures (7 d, 30 d) are derived from the day
buckets at read time (:mod:`tailor_profile.domain.view`), so they move with the clock.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import json_format

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_profile.domain.catalogue import PERSONAL_IDENTIFY_FIELDS, TraitSource

State = dict[str, Any]

#: Day buckets older than this are dropped (the longest window is 30 days).
KEEP_DAYS = 31
#: Session keys remembered per profile, to count a session once however many events it has.
MAX_SESSION_KEYS = 5000
#: Half-life of the favourite-category weights.
FAVOURITE_HALF_LIFE = timedelta(days=30)
#: Fixed origin of the decayed weights, so that sums do not depend on when they were made.
WEIGHT_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
#: How much an interaction with a product says about a taste for its category and brand.
INTEREST_WEIGHTS = {
    "Product Viewed": 1.0,
    "Product Clicked": 1.0,
    "Product Added": 3.0,
    "Order Completed": 5.0,
}
#: Without a session id, events within the same half hour are one session.
SESSION_BUCKET = timedelta(minutes=30)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TraitWrite:
    """A value an event offered for a trait, and whether it won."""

    name: str
    entry: dict[str, Any]
    won: bool
    replaced: dict[str, Any] | None
    #: The same write seen again (a merge of states that both hold it): nothing to record.
    repeat: bool = False


def new_state() -> State:
    state: State = {
        "first_seen": None,
        "last_seen": None,
        "traits": {},
        "life": {
            "ev": {},
            "orders": 0,
            "rev": "0",
            "refunds": 0,
            "sessions": 0,
            "support": 0,
            "social": 0,
            "sat_sum": 0,
            "sat_n": 0,
        },
        "days": {},
        "sessions": {},
        "last_order_at": None,
        "interest": {"category": {}, "brand": {}},
        "cart": {},
        "last_context": None,
        "last_support": None,
    }
    return state


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _later(a: tuple[str, str] | None, b: tuple[str, str] | None) -> bool:
    """Is ``a`` after ``b``? Times are ISO strings in UTC (same width), ties by event id."""
    if a is None:
        return False
    return b is None or a > b


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def _bucket(state: State, day: str) -> dict[str, Any]:
    bucket: dict[str, Any] = state["days"].setdefault(
        day, {"ev": {}, "orders": 0, "rev": "0", "soc": 0, "sup": 0}
    )
    return bucket


def _add_money(total: str, amount: Decimal) -> str:
    return str(Decimal(total) + amount)


def money(value: common_pb2.Money) -> tuple[Decimal, str] | None:
    if not value.amount:
        return None
    try:
        return Decimal(value.amount), value.currency
    except InvalidOperation:
        return None


def event_name(event: events_pb2.CustomerEvent) -> str:
    """``Order Completed`` for a track, else the call kind (``page``, ``identify``, …)."""
    kind = event.WhichOneof("kind") or "unknown"
    return event.track.event if kind == "track" else kind


@dataclass(frozen=True, slots=True)
class Applied:
    """What one event did to a profile."""

    trait_writes: list[TraitWrite]


class Projector:
    """Applies customer events to profile states. ``currency`` is the reporting currency:
    money in another currency counts towards orders but not towards revenue."""

    def __init__(self, currency: str) -> None:
        self.currency = currency

    def apply(
        self, state: State, event: events_pb2.CustomerEvent, event_id: str, now: datetime
    ) -> Applied:
        when = event.timestamp.ToDatetime(tzinfo=UTC)
        at = iso(when)
        if state["first_seen"] is None or at < state["first_seen"]:
            state["first_seen"] = at
        if state["last_seen"] is None or at > state["last_seen"]:
            state["last_seen"] = at
        name = event_name(event)
        life, bucket = state["life"], _bucket(state, _day(when))
        life["ev"][name] = life["ev"].get(name, 0) + 1
        bucket["ev"][name] = bucket["ev"].get(name, 0) + 1
        self._session(state, event, when)
        self._context(state, event, event_id, at)
        writes: list[TraitWrite] = []
        kind = event.WhichOneof("kind")
        if kind == "identify":
            writes = self._identify(state, event, event_id, at)
        elif kind == "group":
            writes = [_offer(state, "group.id", event.group.group_id, event, event_id, at)]
        elif kind == "track":
            self._track(state, event, bucket, when)
        writes += self._context_traits(state, event, event_id, at)
        trim(state, now)
        return Applied(writes)

    # -- behaviour -------------------------------------------------------------------------

    def _track(
        self,
        state: State,
        event: events_pb2.CustomerEvent,
        bucket: dict[str, Any],
        when: datetime,
    ) -> None:
        track, life, at = event.track, state["life"], iso(when)
        payload = track.WhichOneof("payload")
        name = track.event
        if payload == "order":
            order = track.order
            amount = self._order_amount(order)
            if name == "Order Completed":
                life["orders"] += 1
                bucket["orders"] += 1
                life["rev"] = _add_money(life["rev"], amount)
                bucket["rev"] = _add_money(bucket["rev"], amount)
                if state["last_order_at"] is None or at > state["last_order_at"]:
                    state["last_order_at"] = at
                for product in order.products:
                    self._interest(state, product, name, when)
                    _cart_mark(state, product.product_id, "rm", at)
            elif name in ("Order Refunded", "Order Returned"):
                life["refunds"] += 1
                life["rev"] = _add_money(life["rev"], -amount)
                bucket["rev"] = _add_money(bucket["rev"], -amount)
            elif name == "Order Cancelled":
                life["orders"] -= 1
                bucket["orders"] -= 1
                life["rev"] = _add_money(life["rev"], -amount)
                bucket["rev"] = _add_money(bucket["rev"], -amount)
        elif payload == "product":
            product = track.product.product
            self._interest(state, product, name, when)
            if name == "Product Added":
                self._cart_add(state, product, at)
            elif name == "Product Removed":
                _cart_mark(state, product.product_id, "rm", at)
        elif payload == "support":
            self._support(state, track.support, bucket, at)
        elif payload == "social":
            life["social"] += 1
            bucket["soc"] += 1

    def _order_amount(self, order: events_pb2.OrderEvent) -> Decimal:
        """Revenue in the reporting currency (the sum of the lines when revenue is absent)."""
        stated = money(order.revenue)
        if stated is not None:
            return stated[0] if stated[1] == self.currency else ZERO
        total = ZERO
        for product in order.products:
            price = money(product.price)
            if price is not None and price[1] == self.currency:
                total += price[0] * max(product.quantity, 1)
        return total

    def _interest(
        self, state: State, product: events_pb2.Product, name: str, when: datetime
    ) -> None:
        weight = INTEREST_WEIGHTS.get(name)
        if weight is None:
            return
        # Weights grow with time from a fixed origin; the view divides by the growth up to
        # the profile's latest event, so recent interactions count most.
        growth = 2.0 ** ((when - WEIGHT_EPOCH) / FAVOURITE_HALF_LIFE)
        for field, value in (("category", product.category), ("brand", product.brand)):
            if value:
                mark = state["interest"][field].setdefault(value, [0, 0.0])
                mark[0] += 1
                mark[1] += weight * growth

    def _cart_add(self, state: State, product: events_pb2.Product, at: str) -> None:
        if not product.product_id:
            return
        mark = state["cart"].setdefault(product.product_id, {"add": None, "rm": None})
        if mark["add"] is None or at > mark["add"]:
            price = money(product.price)
            mark["add"] = at
            mark["qty"] = max(product.quantity, 1)
            mark["price"] = str(price[0]) if price and price[1] == self.currency else "0"

    def _support(
        self,
        state: State,
        support: events_pb2.SupportInteraction,
        bucket: dict[str, Any],
        at: str,
    ) -> None:
        life = state["life"]
        life["support"] += 1
        bucket["sup"] += 1
        if support.satisfaction:
            life["sat_sum"] += support.satisfaction
            life["sat_n"] += 1
        last = state["last_support"]
        if last is None or at > last["at"]:
            state["last_support"] = {"at": at, "topic": support.topic, "outcome": support.outcome}

    def _session(self, state: State, event: events_pb2.CustomerEvent, when: datetime) -> None:
        session_id = event.context.session_id
        if not session_id:
            bucket = int((when - WEIGHT_EPOCH) / SESSION_BUCKET)
            session_id = f"~{bucket}"
        sessions = state["sessions"]
        day = _day(when)
        if session_id in sessions:
            sessions[session_id] = min(sessions[session_id], day)
            return
        sessions[session_id] = day
        state["life"]["sessions"] += 1
        if len(sessions) > MAX_SESSION_KEYS:
            for key, _ in sorted(sessions.items(), key=lambda item: item[1])[
                : len(sessions) - MAX_SESSION_KEYS
            ]:
                del sessions[key]

    def _context(
        self, state: State, event: events_pb2.CustomerEvent, event_id: str, at: str
    ) -> None:
        last = state["last_context"]
        if last is not None and not _later((at, event_id), (last["at"], last["ev"])):
            return
        ctx = event.context
        state["last_context"] = {
            "at": at,
            "ev": event_id,
            "device_type": ctx.device_type,
            "os_name": ctx.os_name,
            "channel": ctx.channel,
            "locale": ctx.locale,
            "timezone": ctx.timezone,
            "location": {
                "country": ctx.location.country,
                "region": ctx.location.region,
                "city": ctx.location.city,
            },
        }

    # -- traits ----------------------------------------------------------------------------

    def _identify(
        self, state: State, event: events_pb2.CustomerEvent, event_id: str, at: str
    ) -> list[TraitWrite]:
        identify = event.identify
        offers: list[tuple[str, Any]] = []
        demo = identify.demographics
        for field, value in (
            ("age", demo.age),
            ("gender", demo.gender),
            ("country", demo.country),
            ("language", demo.language),
        ):
            if value:
                offers.append((f"demographics.{field}", value))
        offers += [(f"preferences.{k}", v) for k, v in sorted(identify.preferences.items())]
        if identify.interests:
            offers.append(("interests", sorted(set(identify.interests))))
        if identify.HasField("traits"):
            plain = json_format.MessageToDict(identify.traits)
            offers += [(f"traits.{k}", v) for k, v in sorted(plain.items())]
        writes = [_offer(state, name, value, event, event_id, at) for name, value in offers]
        personal: list[tuple[str, common_pb2.PersonalField]] = [
            (trait, getattr(identify, field))
            for trait, field in PERSONAL_IDENTIFY_FIELDS.items()
            if identify.HasField(field)  # type: ignore[arg-type]
        ]
        personal += [(f"personal.{k}", v) for k, v in sorted(identify.personal_traits.items())]
        for trait, field_value in personal:
            if field_value.HasField("encrypted"):
                sealed = base64.b64encode(field_value.encrypted.SerializeToString()).decode()
                writes.append(_offer(state, trait, None, event, event_id, at, sealed=sealed))
        return writes

    def _context_traits(
        self, state: State, event: events_pb2.CustomerEvent, event_id: str, at: str
    ) -> list[TraitWrite]:
        ctx = event.context
        writes = []
        for name, value in (
            ("context.locale", ctx.locale),
            ("context.timezone", ctx.timezone),
            ("context.country", ctx.location.country),
        ):
            if value:
                writes.append(
                    _offer(state, name, value, event, event_id, at, source=TraitSource.CONTEXT)
                )
        return writes


def _offer(
    state: State,
    name: str,
    value: Any,
    event: events_pb2.CustomerEvent,
    event_id: str,
    at: str,
    *,
    sealed: str | None = None,
    source: TraitSource = TraitSource.IDENTIFY,
) -> TraitWrite:
    """Offer a value for a trait; the most recent (time, event id) wins."""
    entry = {
        "v": value,
        "s": sealed,
        "k": event.user_id or event.anonymous_id if sealed else None,
        "src": int(source),
        "at": at,
        "sid": event.source_id,
        "ev": event_id,
    }
    return offer_entry(state, name, entry)


def offer_entry(state: State, name: str, entry: dict[str, Any]) -> TraitWrite:
    current = state["traits"].get(name)
    if current is not None and (current["at"], current["ev"]) == (entry["at"], entry["ev"]):
        return TraitWrite(name, entry, won=False, replaced=None, repeat=True)
    if current is None or _later((entry["at"], entry["ev"]), (current["at"], current["ev"])):
        state["traits"][name] = entry
        return TraitWrite(name, entry, won=True, replaced=current)
    return TraitWrite(name, entry, won=False, replaced=None)


def _cart_mark(state: State, product_id: str, mark: str, at: str) -> None:
    if not product_id:
        return
    marks = state["cart"].setdefault(product_id, {"add": None, "rm": None})
    if marks[mark] is None or at > marks[mark]:
        marks[mark] = at


def trim(state: State, now: datetime) -> None:
    """Drop day buckets no window can reach any more, and closed cart lines."""
    oldest = (now.astimezone(UTC) - timedelta(days=KEEP_DAYS)).date().isoformat()
    for day in [d for d in state["days"] if d < oldest]:
        del state["days"][day]
    closed = [
        pid
        for pid, m in state["cart"].items()
        if m["add"] is None or (m["rm"] is not None and m["rm"] >= m["add"])
    ]
    # Keep closed lines for a day: a late Product Added older than the purchase must not
    # reopen the line.
    for pid in closed:
        marks = state["cart"][pid]
        latest = max(filter(None, (marks["add"], marks["rm"])), default=None)
        if latest is not None and latest < oldest:
            del state["cart"][pid]


def merge_states(survivor: State, merged: State, now: datetime) -> list[TraitWrite]:
    """Fold ``merged`` into ``survivor``; return the trait values that were compared."""
    for key, pick in (("first_seen", min), ("last_seen", max), ("last_order_at", max)):
        values = [v for v in (survivor[key], merged[key]) if v is not None]
        survivor[key] = pick(values) if values else None
    life, other = survivor["life"], merged["life"]
    for key in ("orders", "refunds", "support", "social", "sat_sum", "sat_n"):
        life[key] += other[key]
    life["rev"] = _add_money(life["rev"], Decimal(other["rev"]))
    for name, count in other["ev"].items():
        life["ev"][name] = life["ev"].get(name, 0) + count
    for day, theirs in merged["days"].items():
        ours = _bucket(survivor, day)
        for key in ("orders", "soc", "sup"):
            ours[key] += theirs[key]
        ours["rev"] = _add_money(ours["rev"], Decimal(theirs["rev"]))
        for name, count in theirs["ev"].items():
            ours["ev"][name] = ours["ev"].get(name, 0) + count
    shared = set(survivor["sessions"]) & set(merged["sessions"])
    life["sessions"] += other["sessions"] - len(shared)
    for key, day in merged["sessions"].items():
        survivor["sessions"][key] = min(day, survivor["sessions"].get(key, day))
    for field in ("category", "brand"):
        ours_i, theirs_i = survivor["interest"][field], merged["interest"][field]
        for value, (count, weight) in theirs_i.items():
            mark = ours_i.setdefault(value, [0, 0.0])
            mark[0] += count
            mark[1] += weight
    for pid, theirs_c in merged["cart"].items():
        ours_c = survivor["cart"].get(pid)
        if ours_c is None:
            survivor["cart"][pid] = dict(theirs_c)
            continue
        if theirs_c["add"] is not None and (
            ours_c["add"] is None or theirs_c["add"] > ours_c["add"]
        ):
            ours_c.update({k: theirs_c[k] for k in ("add", "qty", "price") if k in theirs_c})
        if theirs_c["rm"] is not None and (ours_c["rm"] is None or theirs_c["rm"] > ours_c["rm"]):
            ours_c["rm"] = theirs_c["rm"]
    for key, stamp in (("last_context", ("at", "ev")), ("last_support", ("at", None))):
        theirs_v, ours_v = merged[key], survivor[key]
        if theirs_v is not None and (
            ours_v is None
            or _later(
                (theirs_v["at"], theirs_v.get(stamp[1] or "", "")),
                (ours_v["at"], ours_v.get(stamp[1] or "", "")),
            )
        ):
            survivor[key] = theirs_v
    writes = []
    for name, entry in sorted(merged["traits"].items()):
        writes.append(offer_entry(survivor, name, entry))
    trim(survivor, now)
    return writes
