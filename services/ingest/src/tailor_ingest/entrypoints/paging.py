"""Opaque page tokens: a cursor plus a digest of the filters it was issued for."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from tailor_core.errors import FieldViolation, InvalidArgument


def _digest(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def issue(cursor: list[Any], filters: Any) -> str:
    payload = json.dumps({"c": cursor, "f": _digest(filters)}, default=str)
    return base64.urlsafe_b64encode(payload.encode()).decode()


def read(token: str, filters: Any, field: str = "page.page_token") -> list[Any] | None:
    """The cursor of ``token`` (None for the first page); INVALID_ARGUMENT for a foreign one."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursor = payload["c"]
        valid = isinstance(cursor, list) and payload["f"] == _digest(filters)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise InvalidArgument(
            "bad page token",
            [FieldViolation(field, "not a token this API issued for these filters", "BAD_TOKEN")],
        )
    return list(cursor)


def page_size(requested: int, default: int, maximum: int) -> int:
    return default if requested <= 0 else min(requested, maximum)
