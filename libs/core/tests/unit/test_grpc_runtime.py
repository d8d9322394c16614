"""The shared gRPC runtime: auth and scopes, error mapping, health, reflection, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.errors import FieldViolation, InvalidArgument
from tailor_core.interceptors import current_principal
from tailor_core.server import GrpcServer, ServiceBinding, build_server

SECRET = "s" * 40
SERVICE = "tailor.test.v1.EchoService"
SCOPES = {
    f"/{SERVICE}/Echo": "echo:read",
    f"/{SERVICE}/Fail": "echo:read",
    f"/{SERVICE}/Slow": "echo:read",
}

in_flight = asyncio.Event()
release = asyncio.Event()


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request + b"|" + current_principal().id.encode()


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"invalid":
        raise InvalidArgument(
            "bad event", [FieldViolation("events[0].currency", "not an ISO 4217 code", "CURRENCY")]
        )
    if request == b"storage away":
        raise ConnectionRefusedError("connect to 127.0.0.1:5432 failed")
    raise RuntimeError("secret internals: alice@example.com")


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    in_flight.set()
    await release.wait()
    return b"finished"


async def undeclared(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"should never run"


def _binding() -> ServiceBinding:
    def identity(x: bytes) -> bytes:
        return x

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn, identity, identity)
        for name, fn in {"Echo": echo, "Fail": fail, "Slow": slow, "Undeclared": undeclared}.items()
    }
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    return ServiceBinding(
        lambda _s, server: server.add_generic_rpc_handlers((generic,)), None, SERVICE
    )


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    built = build_server(
        service_name="test",
        services=[_binding()],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
        scope_resolver=SCOPES.get,
    )
    await built.start()
    await built.set_serving()
    yield built
    await built.stop(0)


def _call(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}", lambda x: x, lambda x: x)


def _auth(scopes: list[str], sub: str = "svc-a") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(SECRET, sub, 'service', scopes)}"),)


async def test_caller_with_the_declared_scope_is_served_and_known_to_the_handler(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await _call(channel, "Echo")(b"hi", metadata=_auth(["echo:read"], sub="svc-a"))
    assert reply == b"hi|svc-a"


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer not-a-token"),), grpc.StatusCode.UNAUTHENTICATED),
        (
            (("authorization", f"Bearer {mint_token('x' * 40, 'a', 'service', ['echo:read'])}"),),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            (
                (
                    "authorization",
                    f"Bearer {mint_token(SECRET, 'a', 'service', ['echo:read'], ttl_seconds=-5)}",
                ),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (_auth(["other:scope"]), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no credentials", "garbage token", "wrong secret", "expired", "missing scope"],
)
async def test_bad_credentials_and_missing_scopes_are_refused(
    server: GrpcServer, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Echo")(b"hi", metadata=metadata)
    assert caught.value.code() == code


async def test_rpc_without_a_declared_scope_is_refused_even_to_a_powerful_caller(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Undeclared")(b"", metadata=_auth(["echo:read", "admin"]))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "declares no required scope" in (caught.value.details() or "")


async def test_domain_error_becomes_its_status_with_field_details(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Fail")(b"invalid", metadata=_auth(["echo:read"]))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    assert [(v.field, v.reason) for v in details.field_violations] == [
        ("events[0].currency", "CURRENCY")
    ]


async def test_unexpected_exception_is_internal_and_leaks_nothing(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Fail")(b"boom", metadata=_auth(["echo:read"]))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "alice" not in (caught.value.details() or "")
    assert "request id" in (caught.value.details() or "")


async def test_storage_out_of_reach_is_unavailable_and_retryable(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(channel, "Fail")(b"storage away", metadata=_auth(["echo:read"]))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (caught.value.details() or "").endswith("; retry")
    assert "5432" not in (caught.value.details() or "")


async def test_health_and_reflection_are_public_and_describe_the_service(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        named = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert overall.status == named.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_every_rpc_is_counted_by_method_and_code(server: GrpcServer) -> None:
    labels = {"service": "test", "method": f"/{SERVICE}/Echo", "code": "PERMISSION_DENIED"}
    before = REGISTRY.get_sample_value("tailor_grpc_requests_total", labels) or 0.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await _call(channel, "Echo")(b"", metadata=_auth(["nope"]))
    assert REGISTRY.get_sample_value("tailor_grpc_requests_total", labels) == before + 1


async def test_stop_lets_the_rpc_in_flight_finish_and_refuses_new_ones(server: GrpcServer) -> None:
    in_flight.clear()
    release.clear()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        slow = _call(channel, "Slow")(b"", metadata=_auth(["echo:read"]))
        slow_call = asyncio.ensure_future(slow)
        await asyncio.wait_for(in_flight.wait(), 5)
        stopping = asyncio.create_task(server.stop(grace_seconds=10))
        health = health_pb2_grpc.HealthStub(channel)

        async def refused() -> bool:
            try:
                await _call(channel, "Echo")(b"", metadata=_auth(["echo:read"]), timeout=1)
            except grpc.aio.AioRpcError:
                return True
            return False

        assert await asyncio.wait_for(refused(), 5)
        release.set()
        assert await asyncio.wait_for(slow_call, 5) == b"finished"
        await asyncio.wait_for(stopping, 15)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
