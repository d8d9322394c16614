"""Sending events: queued, batched, flushed in the background, retried when worth it.

Behaves like the analytics libraries app developers know: ``track`` and friends return at
once with the event's message id; a background task sends batches of up to ``batch_size``
every ``flush_interval`` seconds; the queue is bounded (a full queue drops the event and
reports it, it never grows without limit); failures that may pass (UNAVAILABLE,
RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED) are retried with exponential backoff or the server's
RetryInfo delay, which is safe because message ids make every resend a duplicate at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tailor_client.channel import credentials, open_channel
from tailor_client.errors import ResourceExhausted, TailorError
from tailor_client.events import complete, customer_event
from tailor_client.retries import with_retries

log = logging.getLogger("tailor_client")

T = TypeVar("T")
MAX_BATCH = 500
ErrorCallback = Callable[[TailorError, Sequence[events_pb2.CustomerEvent]], None]


class QueueFull(ResourceExhausted):
    """The client's own queue is full: the event was dropped, not sent."""


@dataclass
class Stats:
    """What happened to the events given to the client so far."""

    queued: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    suppressed: int = 0
    dropped: int = 0
    failed: int = 0
    rejections: list[ingest_pb2.EventResult] = field(default_factory=list)


class AsyncIngestClient:
    """Events to Tailor's ingest service from asyncio code. Use ``async with`` or call
    :meth:`close` so queued events are sent before the program ends."""

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        max_retries: int = 6,
        timeout: float = 10.0,
        on_error: ErrorCallback | None = None,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
        self._channel = open_channel(target, credentials(api_key=api_key), tls=tls)
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_retries = max_retries
        self._timeout = timeout
        self._on_error = on_error
        self._queue: asyncio.Queue[events_pb2.CustomerEvent] = asyncio.Queue(max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = Stats()

    async def __aenter__(self) -> AsyncIngestClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- the Segment-spec calls; each returns the event's message id -------------------

    def track(self, event: str, *, user_id: str = "", anonymous_id: str = "", **fields: Any) -> str:
        """Queue a track event; typed payloads go in as keywords, e.g.
        ``order=events_pb2.OrderEvent(...)``; ``properties`` is a dict."""
        payload = {k: fields.pop(k) for k in list(fields) if k in _TRACK_PAYLOADS}
        return self.enqueue(
            customer_event(
                user_id=user_id,
                anonymous_id=anonymous_id,
                track=events_pb2.Track(event=event, **payload),
                **fields,
            )
        )

    def identify(self, *, user_id: str = "", anonymous_id: str = "", **traits: Any) -> str:
        """Queue an identify; keywords are Identify fields (email=PersonalField(...), …)."""
        return self.enqueue(
            customer_event(
                user_id=user_id, anonymous_id=anonymous_id, identify=events_pb2.Identify(**traits)
            )
        )

    def page(
        self, name: str = "", *, user_id: str = "", anonymous_id: str = "", **fields: Any
    ) -> str:
        page = {
            k: fields.pop(k) for k in list(fields) if k in ("category", "path", "referrer", "title")
        }
        return self.enqueue(
            customer_event(
                user_id=user_id,
                anonymous_id=anonymous_id,
                page=events_pb2.Page(name=name, **page),
                **fields,
            )
        )

    def screen(self, name: str, *, user_id: str = "", anonymous_id: str = "", **fields: Any) -> str:
        return self.enqueue(
            customer_event(
                user_id=user_id,
                anonymous_id=anonymous_id,
                screen=events_pb2.Screen(name=name, category=fields.pop("category", "")),
                **fields,
            )
        )

    def group(
        self, group_id: str, *, user_id: str = "", anonymous_id: str = "", **fields: Any
    ) -> str:
        return self.enqueue(
            customer_event(
                user_id=user_id,
                anonymous_id=anonymous_id,
                group=events_pb2.Group(group_id=group_id),
                **fields,
            )
        )

    def alias(self, previous_id: str, *, user_id: str, **fields: Any) -> str:
        return self.enqueue(
            customer_event(
                user_id=user_id, alias=events_pb2.Alias(previous_id=previous_id), **fields
            )
        )

    # --- queueing and sending ----------------------------------------------------------

    def enqueue(self, event: events_pb2.CustomerEvent) -> str:
        """Queue any CustomerEvent (a message id and timestamp are filled in when missing)."""
        complete(event)
        if self._closing:
            raise RuntimeError("the client is closed")
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            self._report(QueueFull("the client's queue is full; event dropped"), [event])
            return event.message_id
        self.stats.queued += 1
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return event.message_id

    async def send(
        self, events: Sequence[events_pb2.CustomerEvent]
    ) -> list[ingest_pb2.EventResult]:
        """Send ``events`` now (retrying as the class says) and return their results."""
        results: list[ingest_pb2.EventResult] = []
        for start in range(0, len(events), MAX_BATCH):
            chunk = [complete(e) for e in events[start : start + MAX_BATCH]]
            results += await self._send_with_retries(chunk)
        return results

    async def flush(self) -> None:
        """Wait until every queued event has been sent (or given up on)."""
        await self._queue.join()

    async def close(self) -> None:
        """Send what is queued, then release the connection."""
        self._closing = True
        if self._worker is not None:
            await self.flush()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._channel.close()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._flush_interval
            while len(batch) < self._batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(remaining, 0)))
                except TimeoutError:
                    break
            try:
                await self._deliver(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _deliver(self, batch: list[events_pb2.CustomerEvent]) -> None:
        try:
            results = await self._send_with_retries(batch)
        except TailorError as error:
            self.stats.failed += len(batch)
            self._report(error, batch)
            return
        for result in results:
            if result.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED:
                self.stats.accepted += 1
            elif result.outcome == ingest_pb2.EVENT_OUTCOME_DUPLICATE:
                self.stats.duplicates += 1
            elif result.outcome == ingest_pb2.EVENT_OUTCOME_SUPPRESSED:
                self.stats.suppressed += 1
            else:
                self.stats.rejected += 1
                self.stats.rejections.append(result)

    async def _send_with_retries(
        self, batch: list[events_pb2.CustomerEvent]
    ) -> list[ingest_pb2.EventResult]:
        async def once() -> list[ingest_pb2.EventResult]:
            reply = await self._stub.Batch(
                ingest_pb2.BatchRequest(events=batch), timeout=self._timeout
            )
            return list(reply.results)

        # Resending is safe: message ids make every resend a duplicate at most.
        return await with_retries(once, max_retries=self._max_retries)

    def _report(self, error: TailorError, events: Sequence[events_pb2.CustomerEvent]) -> None:
        if self._on_error is not None:
            self._on_error(error, events)
        else:
            log.warning("%d events not delivered: %s", len(events), type(error).__name__)


_TRACK_PAYLOADS = ("product", "order", "support", "social", "search", "app")


class IngestClient:
    """The same client for code without an event loop: it runs one in a background thread.
    Call :meth:`close` (or use ``with``) before exiting so queued events are sent."""

    def __init__(self, target: str, api_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: AsyncIngestClient = self._call(self._build(target, api_key, options))

    async def _build(self, target: str, api_key: str, options: dict[str, Any]) -> AsyncIngestClient:
        return AsyncIngestClient(target, api_key, **options)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        return self._client.stats

    def _queue(self, method: str, *args: Any, **kwargs: Any) -> str:
        async def run() -> str:
            result: str = getattr(self._client, method)(*args, **kwargs)
            return result

        return self._call(run())

    def track(self, event: str, **fields: Any) -> str:
        return self._queue("track", event, **fields)

    def identify(self, **fields: Any) -> str:
        return self._queue("identify", **fields)

    def page(self, name: str = "", **fields: Any) -> str:
        return self._queue("page", name, **fields)

    def screen(self, name: str, **fields: Any) -> str:
        return self._queue("screen", name, **fields)

    def group(self, group_id: str, **fields: Any) -> str:
        return self._queue("group", group_id, **fields)

    def alias(self, previous_id: str, **fields: Any) -> str:
        return self._queue("alias", previous_id, **fields)

    def enqueue(self, event: events_pb2.CustomerEvent) -> str:
        return self._queue("enqueue", event)

    def send(self, events: Sequence[events_pb2.CustomerEvent]) -> list[ingest_pb2.EventResult]:
        return self._call(self._client.send(events))

    def flush(self) -> None:
        self._call(self._client.flush())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
