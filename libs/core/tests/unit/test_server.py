"""The server every service runs: free port, health, reflection, limits, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.embedded import free_port
from tailor_core.metrics import start_metrics_server
from tailor_core.server import REFLECTION_V1, GrpcServer, ServiceBinding, build_server
from tailor_core.testing.waiting import wait_until

SECRET = "v" * 40
SERVICE = "tailor.test.v1.ServerProbe"
AUTH = (("authorization", f"Bearer {mint_token(SECRET, 'svc', 'service', ['probe'])}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

parked = asyncio.Event()


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def park(request: bytes, context: Any) -> bytes:
    """Waits until cancelled: stands for a slow RPC."""
    parked.set()
    await asyncio.Event().wait()
    return b""


async def not_found_without_raising(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("no such profile")
    return b""


@contextlib.asynccontextmanager
async def serving(
    service_name: str, **options: Any
) -> AsyncIterator[tuple[GrpcServer, grpc.aio.Channel]]:
    """A started server and a channel to it; the server is stopped on the way out."""
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Park": grpc.unary_unary_rpc_method_handler(park),
        "SetCode": grpc.unary_unary_rpc_method_handler(not_found_without_raising),
    }
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    server = build_server(
        service_name=service_name,
        services=[
            ServiceBinding(lambda _s, srv: srv.add_generic_rpc_handlers((generic,)), None, SERVICE)
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
        scope_resolver=lambda _method: "probe",
        **options,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, channel
    finally:
        await server.stop(0)


def requests_total(service: str, method: str, code: str) -> float:
    labels = {"service": service, "method": f"/{SERVICE}/{method}", "code": code}
    return REGISTRY.get_sample_value("tailor_grpc_requests_total", labels) or 0.0


async def test_port_zero_binds_a_free_port_and_reports_it() -> None:
    async with serving("port-test") as (server, channel):
        assert server.port > 0
        assert await channel.unary_unary(f"/{SERVICE}/Echo")(b"hi", metadata=AUTH) == b"hi"


async def test_health_is_not_serving_until_set_then_serving_then_not_serving_from_stop() -> None:
    async with serving("health-test") as (server, channel):
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Watch(health_pb2.HealthCheckRequest(service=""))
        named = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))

        async def next_status(watch: Any) -> int:
            reply = await asyncio.wait_for(watch.read(), 5)
            return int(reply.status)

        assert (await next_status(overall), await next_status(named)) == (NOT_SERVING,) * 2
        await server.set_serving()
        assert (await next_status(overall), await next_status(named)) == (SERVING,) * 2
        stopping = asyncio.create_task(server.stop(grace_seconds=10))
        assert (await next_status(overall), await next_status(named)) == (NOT_SERVING,) * 2
        overall.cancel()
        named.cancel()
        await asyncio.wait_for(stopping, 5)
        await server.set_serving()  # a late startup path must not revive a stopping server
        reply = await server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert reply.status == NOT_SERVING


async def _list_services(channel: grpc.aio.Channel, method: str) -> list[str]:
    call = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return [s.name async for reply in call for s in reply.list_services_response.service]


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        f"/{REFLECTION_V1}/ServerReflectionInfo",
    ],
    ids=["v1alpha", "v1"],
)
async def test_reflection_lists_the_hosted_service_health_and_reflection_without_credentials(
    method: str,
) -> None:
    async with serving("reflection-test") as (_server, channel):
        names = await _list_services(channel, method)
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_every_rpc_is_counted_and_timed_by_method_and_code() -> None:
    timed = {"service": "metrics-test", "method": f"/{SERVICE}/Echo"}
    before_ok = requests_total("metrics-test", "Echo", "OK")
    before_timed = REGISTRY.get_sample_value("tailor_grpc_request_seconds_count", timed) or 0.0
    async with serving("metrics-test") as (_server, channel):
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=AUTH)
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=AUTH)
    assert requests_total("metrics-test", "Echo", "OK") == before_ok + 2
    assert REGISTRY.get_sample_value("tailor_grpc_request_seconds_count", timed) == (
        before_timed + 2
    )


async def test_a_code_set_without_raising_is_the_code_counted() -> None:
    before = requests_total("setcode-test", "SetCode", "NOT_FOUND")
    async with serving("setcode-test") as (_server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/SetCode")(b"", metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert requests_total("setcode-test", "SetCode", "NOT_FOUND") == before + 1


async def test_rpcs_the_client_cancels_or_lets_expire_are_counted_as_such() -> None:
    cancelled = requests_total("cancel-test", "Park", "CANCELLED")
    expired = requests_total("cancel-test", "Park", "DEADLINE_EXCEEDED")
    async with serving("cancel-test") as (_server, channel):
        park_rpc = channel.unary_unary(f"/{SERVICE}/Park")
        parked.clear()
        call = park_rpc(b"", metadata=AUTH)
        await asyncio.wait_for(parked.wait(), 5)
        call.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await park_rpc(b"", metadata=AUTH, timeout=0.2)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def both_counted() -> bool:
            return requests_total("cancel-test", "Park", "CANCELLED") == cancelled + 1 and (
                requests_total("cancel-test", "Park", "DEADLINE_EXCEEDED") == expired + 1
            )

        await wait_until(both_counted, timeout=5, message="cancelled and expired RPCs counted")


async def test_rpcs_beyond_the_concurrency_limit_are_refused_as_resource_exhausted() -> None:
    async with serving("limit-test", max_concurrent_rpcs=1) as (_server, channel):
        parked.clear()
        slow = channel.unary_unary(f"/{SERVICE}/Park")(b"", metadata=AUTH)
        await asyncio.wait_for(parked.wait(), 5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=AUTH, timeout=5)
        slow.cancel()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_messages_over_the_size_limit_are_refused_as_resource_exhausted() -> None:
    async with serving("size-test", max_message_bytes=1024) as (_server, channel):
        echo_rpc = channel.unary_unary(f"/{SERVICE}/Echo")
        assert await echo_rpc(b"x" * 512, metadata=AUTH) == b"x" * 512
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo_rpc(b"x" * 2048, metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def test_metrics_endpoint_serves_the_rpc_counters_and_frees_its_port_on_stop() -> None:
    async with serving("scrape-test") as (_server, channel):
        await channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=AUTH)
    metrics = start_metrics_server(free_port(), host="127.0.0.1")
    try:
        page = await asyncio.to_thread(_scrape, metrics.port)
    finally:
        await asyncio.wait_for(metrics.stop(), 5)
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }
    labels = (("code", "OK"), ("method", f"/{SERVICE}/Echo"), ("service", "scrape-test"))
    assert scraped[("tailor_grpc_requests_total", labels)] >= 1
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(_scrape, metrics.port)
    await metrics.stop()  # twice is harmless


async def test_metrics_port_zero_turns_the_endpoint_off() -> None:
    metrics = start_metrics_server(0)
    assert metrics.port == 0
    await metrics.stop()
