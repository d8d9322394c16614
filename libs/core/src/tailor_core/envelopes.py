"""Building and reading ``tailor.events.v1.Envelope``, the message on every stream."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tailor.events.v1.events_pb2 import Envelope
from tailor_core.outbox import OutboundMessage

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def envelope(
    *,
    source: str,
    event_type: str,
    subject: str,
    payload_field: str,
    payload: Message,
    time: datetime | None = None,
    event_id: str | None = None,
) -> Envelope:
    """A CloudEvents-shaped envelope around ``payload`` (set as ``payload_field``)."""
    now = datetime.now(UTC)
    message = Envelope(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event_type,
        subject=subject,
        time=timestamp(time or now),
        specversion=SPEC_VERSION,
        datacontenttype=CONTENT_TYPE,
        received_at=timestamp(now),
    )
    getattr(message, payload_field).CopyFrom(payload)
    return message


def outbound(message: Envelope, nats_subject: str) -> OutboundMessage:
    """The outbox row that publishes ``message`` on ``nats_subject`` with its id as Nats-Msg-Id."""
    return OutboundMessage(
        event_id=message.id,
        subject=nats_subject,
        payload=message.SerializeToString(),
        headers={"Tailor-Type": message.type},
    )


def parse(data: bytes) -> Envelope:
    envelope_message = Envelope()
    envelope_message.ParseFromString(data)
    return envelope_message
