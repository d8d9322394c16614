"""Building and reading ``tailor.events.v1.Envelope``, the message on every stream."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from tailor.events.v1.events_pb2 import CustomerEvent, Envelope
from tailor_core.outbox import OutboundMessage
from tailor_core.streams import Naming

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


def customer_subject_id(event: CustomerEvent) -> str:
    """Whom a customer event is about: its user id, else its anonymous id ("" if neither)."""
    return event.user_id or event.anonymous_id


def customer_event_id(source_id: str, message_id: str) -> str:
    """Envelope id (and Nats-Msg-Id) of a customer event: deduplication is per source."""
    return f"{source_id}/{message_id}"


def customer_event_envelope(
    event: CustomerEvent,
    *,
    received_at: datetime,
    quality_flags: Sequence[str] = (),
    trace_id: str = "",
) -> Envelope:
    """The EVENTS envelope of an accepted customer event (``event.source_id`` already set).

    ``type`` is ``tailor.events.v1.<kind>``, ``subject`` the subject id, ``time`` the
    event's own (validated) timestamp.
    """
    kind = event.WhichOneof("kind") or "unknown"
    message = Envelope(
        id=customer_event_id(event.source_id, event.message_id),
        source=f"tailor://ingest/sources/{event.source_id}",
        type=f"tailor.events.v1.{kind}",
        subject=customer_subject_id(event),
        time=event.timestamp,
        specversion=SPEC_VERSION,
        datacontenttype=CONTENT_TYPE,
        received_at=timestamp(received_at),
        quality_flags=list(quality_flags),
        trace_id=trace_id,
    )
    message.customer_event.CopyFrom(event)
    return message


def customer_event_subject(naming: Naming, event: CustomerEvent) -> str:
    """``events.<partition>.<subject_token>.<kind>`` (kind: track, identify, page, …)."""
    return naming.event_subject(customer_subject_id(event), event.WhichOneof("kind") or "unknown")
