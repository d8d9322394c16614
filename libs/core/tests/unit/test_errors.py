"""Domain errors reach the caller as their gRPC status, with field details, for every RPC kind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tailor_core import errors
from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tailor_core.interceptors import to_status
from tailor_core.server import GrpcServer, ServiceBinding, build_server

SECRET = "e" * 40
SERVICE = "tailor.test.v1.ErrorProbe"
AUTH = (("authorization", f"Bearer {mint_token(SECRET, 'svc', 'service', ['probe'])}"),)


async def reject(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise InvalidArgument(
        "2 events are invalid",
        [
            FieldViolation("events[0].currency", "not an ISO 4217 code", "CURRENCY"),
            FieldViolation("events[1].timestamp", "lies in the future", "FUTURE_TIMESTAMP"),
        ],
    )


async def list_then_fail(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    yield b"second"
    raise NotFound("segment seg-9 was deleted while listing")


async def count_then_refuse(requests: AsyncIterator[bytes], context: Any) -> bytes:
    # Reads the whole stream before refusing: a grpc.aio client still writing when the
    # server ends the call reports INTERNAL instead of the server's status (grpc/grpc#36066).
    if len([r async for r in requests]) > 2:
        raise ResourceExhausted("batch larger than 2 events")
    return b"accepted"


async def chat_then_crash(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request
        raise RuntimeError("lookup failed for alice@example.com")


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    handlers = {
        "Reject": grpc.unary_unary_rpc_method_handler(reject),
        "ListThenFail": grpc.unary_stream_rpc_method_handler(list_then_fail),
        "CountThenRefuse": grpc.stream_unary_rpc_method_handler(count_then_refuse),
        "ChatThenCrash": grpc.stream_stream_rpc_method_handler(chat_then_crash),
    }
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    built = build_server(
        service_name="errors-test",
        services=[
            ServiceBinding(lambda _s, srv: srv.add_generic_rpc_handlers((generic,)), None, SERVICE)
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
        scope_resolver=lambda method: "probe" if method.startswith(f"/{SERVICE}/") else None,
    )
    await built.start()
    yield built
    await built.stop(0)


DOMAIN_ERRORS = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, DomainError)
]


@pytest.mark.parametrize("error_class", DOMAIN_ERRORS)
def test_every_domain_error_maps_to_the_grpc_code_of_the_same_name(
    error_class: type[DomainError],
) -> None:
    assert to_status(error_class("why")).code == grpc.StatusCode[error_class.code.value]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_grpc_status(code: ErrorCode) -> None:
    error = DomainError("why")
    error.code = code
    assert to_status(error).code.name == code.value


def test_the_errors_module_does_not_import_grpc() -> None:
    probe = (
        "import sys, tailor_core.errors\n"
        "loaded = [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


async def test_invalid_argument_carries_every_field_violation_and_the_request_id(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Reject")(
                b"", metadata=(*AUTH, ("x-request-id", "req-42"))
            )
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "2 events are invalid"
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description, v.reason) for v in bad_request.field_violations] == [
        ("events[0].currency", "not an ISO 4217 code", "CURRENCY"),
        ("events[1].timestamp", "lies in the future", "FUTURE_TIMESTAMP"),
    ]
    assert ("x-request-id", "req-42") in tuple(error.trailing_metadata() or ())


async def test_domain_error_midway_through_a_response_stream_ends_it_with_its_status(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_stream(f"/{SERVICE}/ListThenFail")(b"", metadata=AUTH)
        assert await call.read() == b"first"
        assert await call.read() == b"second"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "segment seg-9 was deleted while listing"


async def test_domain_error_in_a_client_streaming_handler_becomes_its_status(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stream_unary(f"/{SERVICE}/CountThenRefuse")(
                iter([b"a", b"b", b"c", b"d"]), metadata=AUTH
            )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_unexpected_exception_in_a_bidi_stream_is_internal_and_leaks_nothing(
    server: GrpcServer,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(f"/{SERVICE}/ChatThenCrash")(iter([b"hello"]), metadata=AUTH)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [item async for item in call]
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert "alice" not in details
    assert "RuntimeError" not in details


def test_resource_exhausted_tells_the_caller_when_to_retry() -> None:
    status = to_status(ResourceExhausted("rate limit", retry_after_seconds=2.5))
    packed = dict(status.trailing_metadata)["grpc-status-details-bin"]
    retry = error_details_pb2.RetryInfo()
    assert status_pb2.Status.FromString(packed).details[0].Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() == 2.5
