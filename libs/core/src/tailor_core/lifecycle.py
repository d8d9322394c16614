"""Running a service until SIGTERM/SIGINT, then shutting it down in order.

Shutdown: health goes NOT_SERVING and new RPCs are refused; in-flight RPCs get the grace
period; background loops (outbox relay, consumers) are asked to stop, finish the batch
in hand and acknowledge it; then the shutdown hooks run in reverse order of registration
(so NATS is drained before the Postgres pool closes). A background loop that dies on its
own also shuts the service down, with exit code 1: a dead consumer must never hide behind
a server that still answers SERVING.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]


class Stoppable(Protocol):
    async def stop(self, grace_seconds: float) -> None: ...


class ServiceRuntime:
    def __init__(self, grace_seconds: float = 10.0) -> None:
        self._grace = grace_seconds
        self._hooks: list[Hook] = []
        self._loops: list[tuple[asyncio.Task[None], Hook | None]] = []
        self._server: Stoppable | None = None
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self.exit_code = 0

    def on_shutdown(self, hook: Hook) -> None:
        """Run ``hook`` at shutdown; hooks run in reverse order of registration."""
        self._hooks.append(hook)

    def background(self, run: Hook, stop: Hook | None = None) -> None:
        """Run ``run()`` until shutdown, when ``stop()`` asks it to return."""
        task = asyncio.ensure_future(run())
        task.add_done_callback(self._loop_ended)
        self._loops.append((task, stop))

    def serve(self, server: Stoppable) -> None:
        self._server = server

    def request_stop(self) -> None:
        self._stop_requested.set()

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "background loop ended unexpectedly",
            error=type(error).__name__ if error else None,
            exc_info=error,
        )
        self.exit_code = 1
        self._stop_requested.set()

    async def wait(self) -> int:
        """Block until a signal (or a dead loop), then shut down; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested.set)
        try:
            await self._stop_requested.wait()
            log.info("shutting down")
            await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self.exit_code

    async def shutdown(self) -> None:
        """Stop the server, then the background loops, then run the hooks (newest first).

        Each step is bounded by the grace period and a failing step never skips the next:
        the pool must close even when a consumer's ``stop()`` raised.
        """
        self._stopping = True
        if self._server is not None:
            await self._server.stop(self._grace)
        for _, stop in self._loops:
            if stop is not None:
                await self._bounded("background loop stop", stop)
        tasks = [task for task, _ in self._loops]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._grace)
            for task in late:
                log.warning("background loop did not stop in time; cancelling")
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for hook in reversed(self._hooks):
            await self._bounded("shutdown hook", hook)
        log.info("stopped", exit_code=self.exit_code)

    async def _bounded(self, what: str, step: Hook) -> None:
        name = getattr(step, "__qualname__", "?")
        try:
            await asyncio.wait_for(step(), self._grace)
        except TimeoutError:
            log.warning(f"{what} did not finish in time", hook=name, grace_seconds=self._grace)
        except Exception as exc:  # one failing step must not skip the others
            log.warning(f"{what} failed", hook=name, error=type(exc).__name__)
