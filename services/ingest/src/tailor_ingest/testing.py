"""Events as client apps send them, for ingest's tests (and anyone testing against ingest)."""

from __future__ import annotations

from datetime import UTC, datetime

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2


def order_event(
    user_id: str,
    order_id: str,
    *,
    message_id: str = "",
    quantity: int = 2,
    products: int = 1,
    when: datetime | None = None,
) -> events_pb2.CustomerEvent:
    """An Order Completed of ``products`` lines of ``quantity`` each, in GBP."""
    event = events_pb2.CustomerEvent(
        message_id=message_id,
        user_id=user_id,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=order_id,
                products=[
                    events_pb2.Product(
                        product_id=f"8512{line}A",
                        name="WHITE HANGING HEART T-LIGHT HOLDER",
                        price=common_pb2.Money(amount="2.55", currency="GBP"),
                        quantity=quantity,
                    )
                    for line in range(products)
                ],
                revenue=common_pb2.Money(
                    amount=f"{2.55 * quantity * products:.2f}", currency="GBP"
                ),
            ),
        ),
    )
    event.timestamp.FromDatetime(when or datetime.now(UTC))
    return event


def page_event(anonymous_id: str, message_id: str) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        message_id=message_id,
        anonymous_id=anonymous_id,
        page=events_pb2.Page(name="Home", path="/"),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    return event
