"""Page tokens for list RPCs: an opaque, URL-safe encoding of where the last page stopped
(a keyset cursor) and of the filters it was issued for, so a token cannot be replayed
against another query."""

from __future__ import annotations

import base64
import json
from typing import Any

from tailor.common.v1 import common_pb2
from tailor_core.errors import FieldViolation, InvalidArgument


def page_size(page: common_pb2.PageRequest, default: int, maximum: int) -> int:
    """The page size asked for, ``default`` when unset, never above ``maximum``."""
    return default if page.page_size <= 0 else min(page.page_size, maximum)


def encode_token(cursor: list[Any] | None, filters: Any) -> str:
    """The next page's token; empty when ``cursor`` is None (the last page)."""
    if cursor is None:
        return ""
    payload = json.dumps({"c": cursor, "f": filters}, default=str, sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_cursor(token: str, filters: Any, field: str = "page.page_token") -> list[Any] | None:
    """The cursor inside ``token`` (None for the first page); INVALID_ARGUMENT naming
    ``field`` for a token that was not issued for these filters."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        if payload["f"] != json.loads(json.dumps(filters, default=str, sort_keys=True)):
            raise ValueError("other filters")
        cursor = payload["c"]
        if not isinstance(cursor, list):
            raise ValueError("not a cursor")
        return cursor
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "bad page token",
            [FieldViolation(field, "not a token issued for this query", "BAD_TOKEN")],
        ) from None
