"""The one gRPC server interceptor: request id, auth and scope, errors, logs, metrics.

Every RPC of every service passes through :class:`ServiceInterceptor`, which:

1. takes the request id from ``x-request-id`` (or makes one) and tags log lines with it;
2. authenticates the caller and checks the scope the RPC declares in its proto
   (``option (tailor.common.v1.required_scope)``); an RPC with no declared scope is
   refused (fail closed); health and reflection are public;
3. maps :class:`~tailor_core.errors.DomainError` to its status code, with field
   violations as ``google.rpc.BadRequest`` details; any other exception becomes INTERNAL
   with a generic message (the traceback goes to the log, not to the caller);
4. logs one line per RPC (method, code, duration; never the request) and records
   ``tailor_grpc_requests_total`` and ``tailor_grpc_request_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from functools import cache
from types import TracebackType
from typing import Any

import asyncpg
import grpc
import nats.errors
import structlog
from google.protobuf import descriptor_pool
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tailor_core.auth import Authenticator, Principal
from tailor_core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from tailor_core.logs import reset_request_id, set_request_id
from tailor_core.metrics import GRPC_REQUESTS, GRPC_SECONDS

log = structlog.get_logger(__name__)

#: Connection trouble with Postgres or NATS (as opposed to a bug): the caller may retry.
INFRASTRUCTURE_AWAY = (
    ConnectionError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
)

PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)

ScopeResolver = Callable[[str], str | None]

#: A client's ``x-request-id`` is kept only if it looks like an id: it goes into every log
#: line, so it must not be a way to log an e-mail address or a megabyte of text.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+-]{1,128}")

_GRPC_CODES = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.ABORTED: grpc.StatusCode.ABORTED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}


def request_id_from(metadata: dict[str, Any]) -> str:
    """The caller's ``x-request-id`` when it is a plausible id, else a new uuid4."""
    supplied = metadata.get("x-request-id")
    if isinstance(supplied, str) and _REQUEST_ID.fullmatch(supplied):
        return supplied
    return str(uuid.uuid4())


def current_principal() -> Principal:
    """The caller of the RPC being handled (set by the interceptor)."""
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated caller in this context")
    return principal


@cache
def scope_from_proto(full_method: str) -> str | None:
    """The ``required_scope`` option of ``/pkg.Service/Method``, or None if undeclared."""
    from tailor.common.v1 import options_pb2

    name = full_method.lstrip("/").replace("/", ".")
    try:
        method = descriptor_pool.Default().FindMethodByName(name)
    except KeyError:
        return None
    scope: str = method.GetOptions().Extensions[options_pb2.required_scope]
    return scope or None


MAX_VIOLATIONS = 20
_MAX_DETAIL = 200


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def to_status(error: DomainError) -> Any:
    """A ``grpc.Status`` for ``error``, carrying BadRequest details when fields are named."""
    code = _GRPC_CODES[error.code]
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=_clip(error.message))
    if error.field_violations:
        # Trailers have a size limit (HTTP/2 header lists): a status too big to send would
        # reach the caller as a broken connection instead of the precise error.
        details = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field), description=_clip(v.description), reason=_clip(v.reason)
                )
                for v in error.field_violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.add().Pack(details)
    if error.reason:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason, domain="tailor", metadata=error.metadata
        )
        status.details.add().Pack(info)
    if isinstance(error, ResourceExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(timedelta(seconds=error.retry_after_seconds))
        status.details.add().Pack(retry)
    return rpc_status.to_status(status)


class _Outcome:
    """What happened to one RPC, for the log line and the metrics."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        service_name: str,
        authenticator: Authenticator,
        scope_resolver: ScopeResolver = scope_from_proto,
    ) -> None:
        self._service = service_name
        self._authenticator = authenticator
        self._scope_of = scope_resolver

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        if method.startswith(PUBLIC_PREFIXES):
            return handler
        return self._wrap(handler, method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _Call(self, method, context) as call:
                    return await call.run(lambda: inner_uu(_decoded(request), context))

            return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _Call(self, method, context) as call:
                    return await call.run(lambda: inner_su(_decoded_stream(requests), context))

            return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                async with _Call(self, method, context) as call:
                    async for item in call.stream(lambda: inner_us(_decoded(request), context)):
                        yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async with _Call(self, method, context) as call:
                async for item in call.stream(lambda: inner_ss(_decoded_stream(requests), context)):
                    yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **serializers)

    async def authorize(self, method: str, context: grpc.aio.ServicerContext) -> Principal:
        scope = self._scope_of(method)
        metadata = {
            key.lower(): value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)  # binary (-bin) headers carry no credentials
        }
        principal = await self._authenticator.authenticate(metadata)
        if scope is None:
            raise _Denied(f"{method} declares no required scope; refusing by default")
        if not principal.has_scope(scope):
            raise _Denied(f"this RPC needs scope '{scope}'")
        return principal


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message of the RPC's type."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Decode without raising: gRPC would answer a raising deserializer with UNKNOWN before
    any interceptor runs; the sentinel lets the call fail with INVALID_ARGUMENT instead."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _UNDECODABLE

    return decode


def _decoded(request: Any) -> Any:
    if request is _UNDECODABLE:
        raise InvalidArgument(
            "the request is not a valid protobuf message of this RPC's type",
            [FieldViolation("", "malformed protobuf encoding", "MALFORMED_REQUEST")],
        )
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


class _Denied(DomainError):
    code = ErrorCode.PERMISSION_DENIED


class _Call:
    """Context for one RPC: ids, auth, error mapping, the log line and the metrics."""

    def __init__(
        self, owner: ServiceInterceptor, method: str, context: grpc.aio.ServicerContext
    ) -> None:
        self._owner = owner
        self._method = method
        self._context = context
        self._outcome = _Outcome()

    async def __aenter__(self) -> _Call:
        self._request_id = request_id_from(dict(self._context.invocation_metadata() or ()))
        self._request_token = set_request_id(self._request_id)
        self._started = time.perf_counter()
        self._context.set_trailing_metadata(self._trailers())
        return self

    def _trailers(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", self._request_id),)

    async def _authorize(self) -> None:
        self._token = _principal.set(await self._owner.authorize(self._method, self._context))

    async def run(self, invoke: Callable[[], Any]) -> Any:
        try:
            await self._authorize()
            result = invoke()
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            await self._fail(exc)

    async def stream(self, invoke: Callable[[], Any]) -> AsyncIterator[Any]:
        try:
            await self._authorize()
            items = invoke()
            if hasattr(items, "__aiter__"):
                async for item in items:
                    yield item
            else:
                for item in items:
                    yield item
        except Exception as exc:
            await self._fail(exc)

    async def _fail(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            code = self._context.code()
            self._outcome.code = (
                code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            )
            raise exc
        if isinstance(exc, DomainError):
            await self._abort(exc)
        if isinstance(exc, NotImplementedError):
            self._outcome.code = grpc.StatusCode.UNIMPLEMENTED
            await self._context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"{self._method} is not implemented yet"
            )
        if isinstance(exc, INFRASTRUCTURE_AWAY):
            # Postgres or NATS away for a moment (a restart, a failover): nothing was done,
            # and the caller may try again, so it is told UNAVAILABLE rather than INTERNAL.
            log.warning("infrastructure unavailable", method=self._method, error=type(exc).__name__)
            await self._abort(Unavailable("the service cannot reach its storage now; retry"))
        log.exception("unhandled error in RPC", method=self._method, error=type(exc).__name__)
        self._outcome.code = grpc.StatusCode.INTERNAL
        await self._context.abort(
            grpc.StatusCode.INTERNAL, f"internal error (request id {self._request_id})"
        )

    async def _abort(self, error: DomainError) -> None:
        status = to_status(error)
        self._outcome.code = status.code
        # abort() replaces the trailers set so far; keep the request id beside the details.
        await self._context.abort(
            status.code, status.details, (*self._trailers(), *status.trailing_metadata)
        )

    def _settle_outcome(self, exc_type: type[BaseException] | None) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError | GeneratorExit):
            # gRPC cancels the handler when the client goes away or its deadline passes.
            remaining = self._context.time_remaining()
            expired = remaining is not None and remaining <= 0
            self._outcome.code = (
                grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            )
        elif self._outcome.code is grpc.StatusCode.OK:
            # A handler may answer with context.set_code(...) instead of raising.
            code = self._context.code()
            if isinstance(code, grpc.StatusCode):
                self._outcome.code = code

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        self._settle_outcome(exc_type)
        code = self._outcome.code.name
        service = self._owner._service
        GRPC_REQUESTS.labels(service, self._method, code).inc()
        GRPC_SECONDS.labels(service, self._method).observe(elapsed)
        log.info("rpc", method=self._method, code=code, duration_ms=round(elapsed * 1000, 2))
        if hasattr(self, "_token"):
            with contextlib.suppress(ValueError):  # finished in another context: nothing to undo
                _principal.reset(self._token)
        reset_request_id(self._request_token)
