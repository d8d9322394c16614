"""API keys at run time: who is calling (x-api-key), for which source, and how fast.

Keys are read from Postgres and remembered for at most a second, so an update or a
revocation takes effect within a second in every replica without a query per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from tailor_core.auth import Principal
from tailor_core.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from tailor_ingest.adapters import repository
from tailor_ingest.domain.api_keys import ApiKey, TokenBucket, key_id_of, secret_matches

#: How long a key read from Postgres is trusted before it is read again.
KEY_CACHE_SECONDS = 1.0
#: last_used_at is written at most this often per key.
TOUCH_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Caller:
    """A client app sending events: its key and the source the key belongs to."""

    key_id: str
    source_id: str


class ApiKeyRegistry:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        default_rate: int,
        default_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._default_rate = default_rate
        self._default_burst = default_burst
        self._clock = clock
        self._keys: dict[str, tuple[ApiKey | None, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._touched: dict[str, float] = {}

    async def _lookup(self, key_id: str) -> ApiKey | None:
        now = self._clock()
        cached = self._keys.get(key_id)
        if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        async with self._pool.acquire() as conn:
            key = await repository.get_key(conn, key_id)
        if len(self._keys) > 100_000:
            self._keys.clear()  # bounded: unknown ids sprayed at us must not grow memory
        self._keys[key_id] = (key, now)
        return key

    def forget(self, key_id: str) -> None:
        """Drop a cached key (after this process changed it)."""
        self._keys.pop(key_id, None)

    async def authenticate(self, secret: str) -> Principal:
        """The ``ApiKeyVerifier`` of tailor_core.auth: a valid key becomes a client principal."""
        key_id = key_id_of(secret)
        key = await self._lookup(key_id) if key_id else None
        if key is None or not secret_matches(key, secret):
            raise Unauthenticated("unknown API key")
        now = datetime.now(UTC)
        if not key.usable_at(now):
            raise Unauthenticated("API key revoked or expired")
        await self._touch(key, now)
        return Principal(kind="client", id=key.key_id, scopes=frozenset(key.scopes))

    async def caller(self, principal: Principal) -> Caller:
        """The sending source of an authenticated principal; events come only with API keys."""
        if principal.kind != "client":
            raise PermissionDenied("events are sent with a source's API key (x-api-key)")
        key = await self._lookup(principal.id)
        if key is None or not key.usable_at(datetime.now(UTC)):
            raise Unauthenticated("API key revoked or expired")
        return Caller(key.key_id, key.source_id)

    def admit(self, caller: Caller, events: int) -> float:
        """Take ``events`` from the key's bucket: 0.0 when admitted, else seconds to wait."""
        cached = self._keys.get(caller.key_id)
        key = cached[0] if cached else None
        rate = (key.rate_limit_per_second if key else 0) or self._default_rate
        burst = (key.burst if key else 0) or max(self._default_burst, rate)
        now = self._clock()
        bucket = self._buckets.get(caller.key_id)
        if bucket is None:
            bucket = self._buckets[caller.key_id] = TokenBucket(rate, burst, now)
        elif (bucket.rate, bucket.burst) != (rate, burst):
            bucket.reconfigure(rate, burst)
        return bucket.take(events, now)

    def check_rate(self, caller: Caller, events: int) -> None:
        wait = self.admit(caller, events)
        if wait > 0:
            raise ResourceExhausted(
                f"rate limit of key {caller.key_id} reached; retry later",
                retry_after_seconds=max(wait, 0.01),
            )

    async def _touch(self, key: ApiKey, now: datetime) -> None:
        moment = self._clock()
        if moment - self._touched.get(key.key_id, -1e9) < TOUCH_INTERVAL_SECONDS:
            return
        self._touched[key.key_id] = moment
        async with self._pool.acquire() as conn:
            await repository.touch_key(conn, key.key_id, now)
