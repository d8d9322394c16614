"""Structured JSON logs with service, request id and event id; nothing personal.

Values under keys that may carry personal data are replaced before a line is written,
however deeply they are nested, so a careless ``log.info(..., traits=traits)`` is harmless.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

REDACTED = "[redacted]"

#: Keys whose values are never logged (compared lower-case).
PERSONAL_KEYS = frozenset(
    {
        "email",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "phone",
        "address",
        "street",
        "postal_code",
        "ip",
        "ip_address",
        "user_agent",
        "location",
        "lat",
        "lon",
        "latitude",
        "longitude",
        "text",
        "body",
        "message_text",
        "comment",
        "properties",
        "traits",
        "payload",
        "birthday",
        "date_of_birth",
    }
)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in PERSONAL_KEYS else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace the values of personal keys, recursively."""
    for key in list(event_dict):
        if key.lower() in PERSONAL_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _add_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if (request_id := _request_id.get()) is not None:
        event_dict.setdefault("request_id", request_id)
    if (event_id := _event_id.get()) is not None:
        event_dict.setdefault("event_id", event_id)
    return event_dict


def configure_logging(service: str, level: str = "info") -> None:
    """Send JSON lines to stdout, each with ``service``; safe to call more than once."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(stream=sys.stdout, level=numeric, format="%(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_ids,
            redact_personal_data,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file argument: each logger writes to whatever sys.stdout is when it is made.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


@contextlib.contextmanager
def bind_request_id(request_id: str) -> Iterator[None]:
    """Tag every log line inside the block with ``request_id``."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


@contextlib.contextmanager
def bind_event_id(event_id: str) -> Iterator[None]:
    """Tag every log line inside the block with ``event_id``."""
    token = _event_id.set(event_id)
    try:
        yield
    finally:
        _event_id.reset(token)


def set_request_id(request_id: str) -> contextvars.Token[str | None]:
    """Tag log lines with ``request_id`` until :func:`reset_request_id`."""
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    # gRPC may finish a call in another context than it began in; then there is nothing to undo.
    with contextlib.suppress(ValueError):
        _request_id.reset(token)


def current_request_id() -> str | None:
    return _request_id.get()
