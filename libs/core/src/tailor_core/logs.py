"""Structured JSON logs with service, request id and event id; nothing personal.

Values under keys that may carry personal data (or credentials) are replaced before a line
is written, however deeply they are nested, so a careless ``log.info(..., traits=traits)``
is harmless. E-mail addresses are also cut out of free text (messages, exception text),
where a key cannot tell us what they are. Lines from the standard ``logging`` module
(grpc, asyncio, nats) go through the same processors, so every line is JSON and redacted.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

REDACTED = "[redacted]"

#: Keys whose values are never logged (compared after normalizing: ``firstName``,
#: ``first-name`` and ``FIRST_NAME`` all become ``first_name``).
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
        # Credentials are not personal data, but must never reach a log either.
        "authorization",
        "api_key",
        "x_api_key",
        "token",
        "password",
        "secret",
    }
)

#: A key ending in one of these (``customer_email``, ``billing_address``) is personal too.
PERSONAL_SUFFIXES = (
    "_email",
    "_phone",
    "_phone_number",
    "_address",
    "_ip",
    "_first_name",
    "_last_name",
    "_full_name",
    "_user_agent",
    "_password",
    "_secret",
)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def is_personal_key(key: object) -> bool:
    """Whether values logged under ``key`` are withheld."""
    normalized = _CAMEL_BOUNDARY.sub("_", str(key)).replace("-", "_").lower()
    return normalized in PERSONAL_KEYS or normalized.endswith(PERSONAL_SUFFIXES)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {k: REDACTED if is_personal_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return value


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace the values of personal keys, recursively, and e-mails."""
    for key in list(event_dict):
        event_dict[key] = REDACTED if is_personal_key(key) else _scrub(event_dict[key])
    return event_dict


def _add_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if (request_id := _request_id.get()) is not None:
        event_dict.setdefault("request_id", request_id)
    if (event_id := _event_id.get()) is not None:
        event_dict.setdefault("event_id", event_id)
    return event_dict


class _AddService:
    """A processor, not a context variable, so lines from threads carry the service too."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", self._service)
        return event_dict


class _CurrentStdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is now, as the structlog side does."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging(service: str, level: str = "info") -> None:
    """Send JSON lines to stdout, each with ``service``; safe to call more than once."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    enrich: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _AddService(service),
        _add_ids,
    ]
    # Exception text is formatted before redaction so that e-mails in it are cut out too.
    render: list[Processor] = [
        structlog.processors.format_exc_info,
        redact_personal_data,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *enrich, *render],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file argument: each logger writes to whatever sys.stdout is when it is made.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *enrich],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStdoutHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    structlog.contextvars.clear_contextvars()


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
