"""API keys of ingest sources, and the token bucket that rate-limits each of them.

A key's secret reads ``<key_id>.<random>``: the key id is public (listings, logs), the rest is
256 random bits stored only as a SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from tailor_core.errors import FieldViolation, InvalidArgument

SOURCE_ID = re.compile(r"[a-z0-9_-]{1,64}")
KEY_ID = re.compile(r"k[0-9a-f]{16}")
#: What an API key may be given. Client apps get only events:write; ingest:admin lets a
#: source's own tooling manage its plan and read its rejected events.
KEY_SCOPES = frozenset({"events:write", "ingest:admin"})
DEFAULT_SCOPES = ("events:write",)
MAX_LABEL = 200


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    source_id: str
    scopes: tuple[str, ...]
    rate_limit_per_second: int = 0
    burst: int = 0
    label: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    secret_sha256: bytes = field(default=b"", repr=False)

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def new_secret() -> tuple[str, str, bytes]:
    """A fresh (key id, full secret, digest to store)."""
    key_id = "k" + secrets.token_hex(8)
    secret = f"{key_id}.{secrets.token_urlsafe(32)}"
    return key_id, secret, digest(secret)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def key_id_of(secret: str) -> str | None:
    """The key id a presented secret claims, or None when it is not shaped like one."""
    key_id, dot, rest = secret.partition(".")
    if not dot or not rest or not KEY_ID.fullmatch(key_id):
        return None
    return key_id


def secret_matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(key.secret_sha256, digest(secret))


def check_key_fields(
    *,
    source_id: str | None = None,
    scopes: tuple[str, ...] | None = None,
    rate_limit_per_second: int | None = None,
    burst: int | None = None,
    label: str | None = None,
    expires_at: datetime | None = None,
    now: datetime,
    prefix: str = "",
) -> None:
    """Raise InvalidArgument naming every field that a key may not have."""
    problems: list[FieldViolation] = []
    if source_id is not None and not SOURCE_ID.fullmatch(source_id):
        problems.append(
            FieldViolation(
                f"{prefix}source_id", "1..64 of a-z, 0-9, '-' and '_'", "SOURCE_ID_MALFORMED"
            )
        )
    for index, scope in enumerate(scopes or ()):
        if scope not in KEY_SCOPES:
            problems.append(
                FieldViolation(
                    f"{prefix}scopes[{index}]",
                    f"an API key may hold only {', '.join(sorted(KEY_SCOPES))}",
                    "SCOPE_NOT_ALLOWED",
                )
            )
    for name, value in (("rate_limit_per_second", rate_limit_per_second), ("burst", burst)):
        if value is not None and value < 0:
            problems.append(FieldViolation(f"{prefix}{name}", "must not be negative", "NEGATIVE"))
    if label is not None and len(label) > MAX_LABEL:
        problems.append(
            FieldViolation(f"{prefix}label", f"at most {MAX_LABEL} characters", "TOO_LONG")
        )
    if expires_at is not None and expires_at <= now:
        problems.append(FieldViolation(f"{prefix}expires_at", "lies in the past", "IN_THE_PAST"))
    if problems:
        raise InvalidArgument("invalid API key fields", problems)


class TokenBucket:
    """Allows ``rate`` events per second on average and ``burst`` at once.

    Times are plain seconds from a monotonic clock, passed in, so tests control them.
    """

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def reconfigure(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, burst)

    def take(self, count: int, now: float) -> float:
        """Take ``count`` tokens; 0.0 when granted, else the seconds to wait before retrying.

        A request larger than the burst passes once the bucket is full and leaves it in
        debt, so the average rate still holds without forcing clients to split batches.
        """
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        needed = min(count, self.burst)
        if needed <= self._tokens:
            self._tokens -= count
            return 0.0
        return (needed - self._tokens) / self.rate
