"""A grpc.aio server with everything every service needs: interceptor, health, reflection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from tailor_core.auth import Authenticator
from tailor_core.interceptors import ScopeResolver, ServiceInterceptor, scope_from_proto

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: grpc.reflection.v1 is v1alpha renamed, message for message; newer tools ask for it first.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: the generated ``add_*_to_server`` and its servicer."""

    register: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    full_name: str  # e.g. "tailor.consent.v1.ConsentService"


class GrpcServer:
    """Serving state is reported on grpc.health.v1 for "" and for each hosted service."""

    def __init__(self, server: grpc.aio.Server, port: int, service_names: Sequence[str]) -> None:
        self._server = server
        self.port = port
        self._names = ["", *service_names]
        self._health = health.aio.HealthServicer()

    @property
    def health(self) -> Any:
        return self._health

    async def start(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()

    async def set_serving(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def set_not_serving(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _set(self, status: int) -> None:
        for name in self._names:
            result = self._health.set(name, status)
            if result is not None:
                await result

    async def stop(self, grace_seconds: float) -> None:
        """Refuse new RPCs at once; give running ones ``grace_seconds`` to finish."""
        # NOT_SERVING for good: a late set_serving() from a startup path must not undo it.
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_seconds)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def build_server(
    *,
    service_name: str,
    services: Sequence[ServiceBinding],
    authenticator: Authenticator,
    host: str = "0.0.0.0",
    port: int = 0,
    scope_resolver: ScopeResolver = scope_from_proto,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_concurrent_rpcs: int | None = None,
) -> GrpcServer:
    """Build (not start) the server; ``port`` 0 picks a free port, reported as ``.port``.

    ``max_message_bytes`` bounds each message both ways; ``max_concurrent_rpcs`` (None:
    unbounded) makes the server answer RESOURCE_EXHAUSTED beyond that many RPCs at once.
    """
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(service_name, authenticator, scope_resolver)],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Two replicas on one port would split traffic silently; fail to bind instead.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    for binding in services:
        binding.register(binding.servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    names = [binding.full_name for binding in services]
    wrapper = GrpcServer(server, bound, names)
    health_pb2_grpc.add_HealthServicer_to_server(wrapper.health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    _enable_reflection(server, [*names, health_name, reflection.SERVICE_NAME])
    return wrapper


def _enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection as v1alpha and, with the same servicer, as v1."""
    servicer = reflection.aio.ReflectionServicer(service_names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


def unimplemented(servicer_class: type[Any]) -> Any:
    """An instance of a generated servicer base, whose every RPC answers UNIMPLEMENTED.

    For a service whose own servicer has not been written yet: it still serves health,
    reflection and the v1 contract, and says plainly that the RPCs are not there.
    """
    return servicer_class()
