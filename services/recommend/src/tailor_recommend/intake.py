"""Which customer events are interactions with items: product views, cart additions,
purchases and refunds, one per product line."""

from __future__ import annotations

from dataclasses import dataclass

from tailor.events.v1 import events_pb2
from tailor_recommend.domain.interactions import EventKind

_PRODUCT_EVENTS = {
    "Product Viewed": EventKind.VIEW,
    "Product Clicked": EventKind.VIEW,
    "Product Added": EventKind.ADD_TO_CART,
}
_ORDER_EVENTS = {"Order Completed": EventKind.PURCHASE, "Order Refunded": EventKind.REFUND}


@dataclass(frozen=True, slots=True)
class Touch:
    """One interaction an event carries, and what it says of the item."""

    item_id: str
    kind: EventKind
    category: str
    name: str


def touches(event: events_pb2.CustomerEvent) -> list[Touch]:
    """The interactions of ``event`` (none for events that are not about items)."""
    if event.WhichOneof("kind") != "track":
        return []
    track = event.track
    if track.event in _PRODUCT_EVENTS and track.HasField("product"):
        product = track.product.product
        if not product.product_id:
            return []
        return [
            Touch(product.product_id, _PRODUCT_EVENTS[track.event], product.category, product.name)
        ]
    if track.event in _ORDER_EVENTS and track.HasField("order"):
        kind = _ORDER_EVENTS[track.event]
        seen: dict[str, Touch] = {}
        for line in track.order.products:
            if line.product_id and line.product_id not in seen:
                seen[line.product_id] = Touch(line.product_id, kind, line.category, line.name)
        return list(seen.values())
    return []
