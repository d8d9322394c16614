"""Calling again when a failure may pass: exponential backoff with jitter, or the server's
RetryInfo delay, at most ``max_retries`` times."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tailor_client.errors import ResourceExhausted, TailorError

T = TypeVar("T")
MAX_DELAY_SECONDS = 10.0


def any_retryable(error: TailorError) -> bool:
    """UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED: for calls safe to repeat."""
    return error.retryable


def refused_before_work(error: TailorError) -> bool:
    """Only RESOURCE_EXHAUSTED (the server refused the call before doing anything): for calls
    that must not run twice, where UNAVAILABLE or a deadline may hide a call that did run."""
    return isinstance(error, ResourceExhausted)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    retry_on: Callable[[TailorError], bool] = any_retryable,
) -> T:
    """``await call()``, again after a pause while it raises an error ``retry_on`` accepts."""
    attempt = 0
    while True:
        try:
            return await call()
        except TailorError as error:
            if not retry_on(error) or attempt >= max_retries:
                raise
            delay = error.retry_after_seconds or min(MAX_DELAY_SECONDS, 0.1 * 2**attempt)
            await asyncio.sleep(delay * random.uniform(1.0, 1.25))  # jitter spreads retries
            attempt += 1
