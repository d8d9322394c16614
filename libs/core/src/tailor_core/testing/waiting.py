"""Waiting on a condition with a deadline: the only kind of waiting tests do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    message: str = "condition",
) -> float:
    """Poll ``condition`` until it holds and return the seconds it took.

    Raises AssertionError naming ``message`` when ``timeout`` seconds pass first.
    """
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{message} not met within {timeout} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start
