"""What every typed service client shares: one channel carrying the caller's token, calls
with a deadline and retries, and a synchronous face running the asyncio client on a
background event loop (as :class:`~tailor_client.IngestClient` does)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Generic, Self, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tailor.common.v1 import common_pb2
from tailor_client.channel import credentials, open_channel
from tailor_client.retries import any_retryable, refused_before_work, with_retries

T = TypeVar("T")
AsyncClient = TypeVar("AsyncClient", bound="AsyncServiceClient")


class AsyncServiceClient:
    """Base of the asyncio clients: ``target`` is ``host:port``, ``token`` a bearer token
    holding the scopes of the RPCs called; ``timeout`` is each call's deadline in seconds;
    calls that are safe to repeat are retried on UNAVAILABLE, RESOURCE_EXHAUSTED and
    DEADLINE_EXCEEDED up to ``max_retries`` times, the others only on RESOURCE_EXHAUSTED.
    Use ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = open_channel(target, credentials(token=token), tls=tls)
        self._timeout = timeout
        self._max_retries = max_retries

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, rpc: Callable[..., Awaitable[T]], request: Any, *, idempotent: bool = True
    ) -> T:
        """``rpc(request)`` with the client's deadline, retried as the class says."""

        async def once() -> T:
            return await rpc(request, timeout=self._timeout)

        retry_on = any_retryable if idempotent else refused_before_work
        return await with_retries(once, max_retries=self._max_retries, retry_on=retry_on)


class SyncServiceClient(Generic[AsyncClient]):
    """Base of the synchronous clients: the asyncio client on an event loop in a daemon
    thread. Use ``with`` or call :meth:`close`."""

    def __init__(self, build: Callable[[], AsyncClient]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def built() -> AsyncClient:  # the channel must belong to the loop's thread
            return build()

        self._client: AsyncClient = self._run(built())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def page(page_size: int, page_token: str) -> common_pb2.PageRequest:
    """A PageRequest (0 = the RPC's default size)."""
    return common_pb2.PageRequest(page_size=page_size, page_token=page_token)


def timestamp(when: datetime) -> Timestamp:
    """A Timestamp of an aware datetime (a naive one is taken as UTC)."""
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp
