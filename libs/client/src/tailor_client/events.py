"""Building customer events: message ids and timestamps filled in, the rest as given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.struct_pb2 import Struct

from tailor.events.v1 import events_pb2


def complete(event: events_pb2.CustomerEvent) -> events_pb2.CustomerEvent:
    """Give ``event`` a message id (a UUID) and a timestamp when it has none, and stamp
    ``sent_at``; returns the same event."""
    if not event.message_id:
        event.message_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    if not event.HasField("timestamp"):
        event.timestamp.FromDatetime(now)
    event.sent_at.FromDatetime(now)
    return event


def _struct(values: dict[str, Any] | None) -> Struct | None:
    if not values:
        return None
    struct = Struct()
    struct.update(values)
    return struct


def customer_event(
    *,
    user_id: str = "",
    anonymous_id: str = "",
    properties: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
    message_id: str = "",
    **kind: Any,
) -> events_pb2.CustomerEvent:
    """A CustomerEvent with exactly one kind given as a keyword (``track=Track(...)``)."""
    if len(kind) != 1:
        raise ValueError("give exactly one kind: track, identify, page, screen, group or alias")
    event = events_pb2.CustomerEvent(
        user_id=user_id, anonymous_id=anonymous_id, message_id=message_id, **kind
    )
    struct = _struct(properties)
    if struct is not None:
        event.properties.CopyFrom(struct)
    if timestamp is not None:
        event.timestamp.FromDatetime(timestamp)
    return complete(event)
