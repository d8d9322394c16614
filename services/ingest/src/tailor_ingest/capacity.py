"""Bounded work in flight: the memory ingest uses stays bounded however hard it is pushed."""

from __future__ import annotations

import asyncio

from tailor_core.errors import ResourceExhausted


class Capacity:
    """At most ``limit`` events in flight across every call of the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._freed = asyncio.Condition()

    def try_reserve(self, events: int) -> None:
        """Reserve at once or refuse with RESOURCE_EXHAUSTED (unary and batch calls)."""
        if self.in_flight + events > self.limit:
            raise ResourceExhausted("ingest is overloaded; retry shortly", retry_after_seconds=0.2)
        self.in_flight += events

    async def reserve(self, events: int) -> None:
        """Wait until there is room (streams: not reading is HTTP/2 back-pressure)."""
        async with self._freed:
            await self._freed.wait_for(lambda: self.in_flight + events <= self.limit)
            self.in_flight += events

    async def release(self, events: int) -> None:
        self.in_flight -= events
        async with self._freed:
            self._freed.notify_all()
