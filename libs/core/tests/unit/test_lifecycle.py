"""SIGTERM/SIGINT: stop taking RPCs, finish those in flight, stop loops, then hooks in reverse."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.lifecycle import ServiceRuntime
from tailor_core.server import GrpcServer, ServiceBinding, build_server
from tailor_core.testing.waiting import wait_until

SECRET = "c" * 40
SERVICE = "tailor.test.v1.LifecycleProbe"
AUTH = (("authorization", f"Bearer {mint_token(SECRET, 'svc', 'service', ['probe'])}"),)
SIGNALS = (signal.SIGTERM, signal.SIGINT)

in_flight = asyncio.Event()
release = asyncio.Event()


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def slow(request: bytes, context: Any) -> bytes:
    in_flight.set()
    await release.wait()
    return b"finished"


async def _server() -> GrpcServer:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    server = build_server(
        service_name="lifecycle-test",
        services=[
            ServiceBinding(lambda _s, srv: srv.add_generic_rpc_handlers((generic,)), None, SERVICE)
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
        scope_resolver=lambda _method: "probe",
    )
    await server.start()
    await server.set_serving()
    return server


def _recorder(events: list[str], name: str) -> Callable[[], Awaitable[None]]:
    async def hook() -> None:
        events.append(name)

    return hook


@pytest.fixture
async def signal_handlers_restored() -> AsyncIterator[None]:
    """Whatever happens in the test, SIGTERM/SIGINT get their previous handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    loop = asyncio.get_running_loop()
    for sig, handler in saved.items():
        loop.remove_signal_handler(sig)
        signal.signal(sig, handler)


async def _handled_by_the_loop(sig: signal.Signals) -> None:
    """Wait until the runtime listens for ``sig``: sent earlier, it would end pytest itself."""
    original = signal.getsignal(sig)

    async def installed() -> bool:
        return signal.getsignal(sig) is not original

    await wait_until(installed, timeout=5, message=f"{sig.name} handler installed")


@pytest.mark.usefixtures("signal_handlers_restored")
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
async def test_a_signal_lets_the_rpc_in_flight_finish_refuses_new_ones_and_unwinds_in_order(
    sig: signal.Signals,
) -> None:
    events: list[str] = []
    runtime = ServiceRuntime(grace_seconds=10)
    server = await _server()
    runtime.serve(server)
    batch_done = asyncio.Event()

    async def consume() -> None:
        await batch_done.wait()
        events.append("consumer acked its batch")

    async def stop_consumer() -> None:
        events.append("consumer asked to stop")
        batch_done.set()

    runtime.background(consume, stop=stop_consumer)
    for name in ("close pool", "drain nats", "stop relay"):
        runtime.on_shutdown(_recorder(events, name))
    in_flight.clear()
    release.clear()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        slow_rpc = channel.unary_unary(f"/{SERVICE}/Slow")
        slow_call = asyncio.ensure_future(slow_rpc(b"", metadata=AUTH))
        await asyncio.wait_for(in_flight.wait(), 5)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        waiting = asyncio.create_task(runtime.wait())
        await _handled_by_the_loop(sig)
        os.kill(os.getpid(), sig)

        update = await asyncio.wait_for(watch.read(), 5)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

        async def new_rpcs_refused() -> bool:
            try:
                await channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=AUTH, timeout=2)
            except grpc.aio.AioRpcError:
                return True
            return False

        await wait_until(new_rpcs_refused, timeout=5, message="new RPCs refused")
        assert events == []  # nothing is torn down while an RPC is still running
        release.set()
        assert await asyncio.wait_for(slow_call, 5) == b"finished"
        assert await asyncio.wait_for(waiting, 15) == 0

    assert events == [
        "consumer asked to stop",
        "consumer acked its batch",
        "stop relay",
        "drain nats",
        "close pool",
    ]
    assert not asyncio.get_running_loop().remove_signal_handler(sig)  # handler was removed


@pytest.mark.usefixtures("signal_handlers_restored")
async def test_a_crashed_background_loop_shuts_the_service_down_with_exit_code_1() -> None:
    events: list[str] = []
    runtime = ServiceRuntime(grace_seconds=5)
    server = await _server()
    runtime.serve(server)
    crash = asyncio.Event()

    async def consume() -> None:
        await crash.wait()
        raise ConnectionError("NATS connection lost")

    runtime.background(consume)
    runtime.on_shutdown(_recorder(events, "close pool"))
    waiting = asyncio.create_task(runtime.wait())
    crash.set()
    assert await asyncio.wait_for(waiting, 10) == 1
    reply = await server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert events == ["close pool"]


async def test_failing_or_hanging_steps_do_not_skip_the_rest_of_shutdown() -> None:
    events: list[str] = []
    runtime = ServiceRuntime(grace_seconds=0.2)
    stopped = asyncio.Event()

    async def consume() -> None:
        await stopped.wait()

    async def stop_that_raises() -> None:
        stopped.set()
        raise RuntimeError("ack failed")

    async def hangs() -> None:
        events.append("drain started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("drain abandoned after the grace period")
            raise

    async def fails() -> None:
        events.append("relay stop failed")
        raise RuntimeError("relay already gone")

    runtime.background(consume, stop=stop_that_raises)
    runtime.on_shutdown(_recorder(events, "close pool"))
    runtime.on_shutdown(hangs)
    runtime.on_shutdown(fails)
    await asyncio.wait_for(runtime.shutdown(), 5)
    assert events == [
        "relay stop failed",
        "drain started",
        "drain abandoned after the grace period",
        "close pool",
    ]
    assert runtime.exit_code == 0
