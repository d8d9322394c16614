"""Reading well-known protobuf types from requests without trusting them.

A Timestamp or Duration off the wire can hold values no calendar has (negative nanos,
seconds past year 9999); converting one raises deep inside protobuf. These helpers turn
that into INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from tailor_core.errors import FieldViolation, InvalidArgument


def request_time(message: Message, name: str, path: str) -> datetime | None:
    """``message.<name>`` as an aware datetime, None when unset."""
    if not message.HasField(name):
        return None
    try:
        moment: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument(
            f"{path} is not a valid timestamp",
            [FieldViolation(path, "not a valid timestamp (RFC 3339 range)", "TIMESTAMP_MALFORMED")],
        ) from None
    return moment


def request_duration(message: Message, name: str, path: str) -> timedelta | None:
    """``message.<name>`` as a timedelta, None when unset."""
    if not message.HasField(name):
        return None
    try:
        span: timedelta = getattr(message, name).ToTimedelta()
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{path} is not a valid duration",
            [FieldViolation(path, "not a valid duration", "DURATION_MALFORMED")],
        ) from None
    return span


def check_text(value: str, path: str, max_length: int = 1024) -> str:
    """A caller's string fit for a query: no NUL or other control characters, bounded."""
    if len(value) > max_length or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidArgument(
            f"{path} has control characters or is too long",
            [
                FieldViolation(
                    path,
                    f"at most {max_length} characters, no control characters",
                    "TEXT_MALFORMED",
                )
            ],
        )
    return value
