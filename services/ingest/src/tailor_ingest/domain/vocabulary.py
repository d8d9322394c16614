"""The event names of the Segment spec that carry a typed payload, in one place."""

from __future__ import annotations

from tailor.events.v1 import events_pb2

PRODUCT_EVENTS = frozenset(
    {"Product Viewed", "Product Clicked", "Product Added", "Product Removed"}
)
ORDER_EVENTS = frozenset(
    {
        "Checkout Started",
        "Order Completed",
        "Order Updated",
        "Order Refunded",
        "Order Cancelled",
        "Order Returned",
    }
)
SUPPORT_EVENTS = frozenset(
    {
        "Support Ticket Opened",
        "Support Ticket Updated",
        "Support Ticket Resolved",
        "Chat Started",
        "Chat Ended",
        "Call Completed",
    }
)
APP_ACTIONS = {
    "Application Installed": events_pb2.APP_ACTION_INSTALLED,
    "Application Opened": events_pb2.APP_ACTION_OPENED,
    "Application Backgrounded": events_pb2.APP_ACTION_BACKGROUNDED,
    "Application Updated": events_pb2.APP_ACTION_UPDATED,
    "Application Uninstalled": events_pb2.APP_ACTION_UNINSTALLED,
    "Application Crashed": events_pb2.APP_ACTION_CRASHED,
    "Deep Link Opened": events_pb2.APP_ACTION_DEEP_LINK_OPENED,
}
#: The event names each typed track payload (Track.payload) fits.
PAYLOAD_EVENTS = {
    "product": PRODUCT_EVENTS,
    "order": ORDER_EVENTS,
    "support": SUPPORT_EVENTS,
    "social": frozenset({"Social Engagement"}),
    "search": frozenset({"Products Searched"}),
    "app": frozenset(APP_ACTIONS),
}
