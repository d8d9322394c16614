"""One platform of real services for every hostile-input module, and the calls they share.

The five services start once for the package (they take most of the suite's time); each
module sends its hostile requests as raw bytes through generic channel calls, so that what
reaches a service is exactly what a hostile client could put on the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor.common.v1 import options_pb2
from tailor.consent.v1 import audit_pb2, consent_pb2, keys_pb2
from tailor.ingest.v1 import admin_pb2, ingest_pb2
from tailor.privacy.v1 import privacy_pb2
from tailor.profile.v1 import profile_pb2
from tailor.recommend.v1 import recommend_pb2
from tailor.segment.v1 import segment_pb2
from tailor_core.settings import SERVICE_NAMES
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import Metadata, RunningPlatform, bearer, running_platform

#: The public services under test, each with the process that serves it.
SERVICES: tuple[tuple[ServiceDescriptor, str], ...] = (
    (consent_pb2.DESCRIPTOR.services_by_name["ConsentService"], "consent"),
    (audit_pb2.DESCRIPTOR.services_by_name["AuditService"], "consent"),
    (keys_pb2.DESCRIPTOR.services_by_name["KeyService"], "consent"),
    (privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"], "consent"),
    (profile_pb2.DESCRIPTOR.services_by_name["ProfileService"], "profile"),
    (segment_pb2.DESCRIPTOR.services_by_name["SegmentService"], "segment"),
    (recommend_pb2.DESCRIPTOR.services_by_name["RecommendService"], "recommend"),
)
METHODS: tuple[MethodDescriptor, ...] = tuple(m for s, _ in SERVICES for m in s.methods)
#: Ingest's services: fuzzed by ingest's own suite, but covered by the credential checks.
INGEST_SERVICES: tuple[tuple[ServiceDescriptor, str], ...] = (
    (ingest_pb2.DESCRIPTOR.services_by_name["IngestService"], "ingest"),
    (admin_pb2.DESCRIPTOR.services_by_name["IngestAdminService"], "ingest"),
)
_HOST = {service.full_name: process for service, process in SERVICES + INGEST_SERVICES}

#: Every scope of the vocabulary (tailor.common.v1.Scope), read from the contract.
ALL_SCOPES: tuple[str, ...] = tuple(
    name
    for value in options_pb2.Scope.DESCRIPTOR.values
    if (name := value.GetOptions().Extensions[options_pb2.scope_name])
)
EVERYTHING = bearer(*ALL_SCOPES)

#: What a caller may be told about a hostile request; INTERNAL, UNKNOWN, DEADLINE_EXCEEDED
#: (a hang) or a dropped connection would be a bug. UNAVAILABLE counts only when the server
#: said "; retry" itself (see :func:`call`).
PRECISE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
CALL_TIMEOUT_SECONDS = 15.0


def path_of(method: MethodDescriptor) -> str:
    """``/package.Service/Method``, as gRPC and the interceptor name it."""
    return f"/{method.containing_service.full_name}/{method.name}"


def host_of(method: MethodDescriptor) -> str:
    """The platform process serving ``method``."""
    return _HOST[method.containing_service.full_name]


@dataclass(frozen=True)
class Answer:
    """What one raw call came back with."""

    code: grpc.StatusCode
    details: str
    body: bytes
    trailers: tuple[tuple[str, str | bytes], ...]

    @property
    def precise(self) -> bool:
        if self.code == grpc.StatusCode.UNAVAILABLE:
            # The server's own answer when storing or publishing timed out on a loaded
            # machine: precise and retryable. Any other UNAVAILABLE is a broken call.
            return self.details.endswith("; retry")
        return self.code in PRECISE

    def status(self) -> status_pb2.Status:
        """The google.rpc.Status of an error (empty when the server sent none)."""
        found = status_pb2.Status()
        for key, value in self.trailers:
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                found.ParseFromString(value)
        return found

    def field_violations(self) -> list[error_details_pb2.BadRequest.FieldViolation]:
        violations = []
        for detail in self.status().details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations.extend(bad.field_violations)
        return violations

    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        for detail in self.status().details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info
        return None

    def everything_sent(self) -> bytes:
        """Body, details and trailers together, for searching a leak in any of them."""
        parts = [self.body, self.details.encode()]
        for key, value in self.trailers:
            parts += [key.encode(), value if isinstance(value, bytes) else value.encode()]
        return b"\n".join(parts)


class Caller:
    """Raw calls (bytes in, bytes out) to the platform's services."""

    def __init__(self, platform: RunningPlatform) -> None:
        self.platform = platform
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, process: str) -> grpc.aio.Channel:
        if process not in self._channels:
            # The client may send and receive more than the server accepts: the limit under
            # test is the server's.
            self._channels[process] = grpc.aio.insecure_channel(
                self.platform.service(process).address,
                options=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1),
                ],
            )
        return self._channels[process]

    async def call(
        self,
        method: MethodDescriptor,
        body: bytes,
        metadata: Metadata = EVERYTHING,
        timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> Answer:
        """Send ``body`` to ``method`` and return the status it got, whatever it was."""
        channel = self.channel(host_of(method))
        path = path_of(method)
        if method.server_streaming and not method.client_streaming:
            raise ValueError(f"{method.full_name}: server streaming alone is not supported here")
        # Streams get one message, none for an empty body (what a call refused before its
        # first read needs): a grpc.aio client still writing when the server ends the call
        # reports INTERNAL or UNAVAILABLE instead of the server's status (grpc/grpc#36066).
        stream = iter([body] if body else [])
        call: Any
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path)(stream, metadata=metadata, timeout=timeout)
        elif method.client_streaming:
            call = channel.stream_unary(path)(stream, metadata=metadata, timeout=timeout)
        else:
            call = channel.unary_unary(path)(body, metadata=metadata, timeout=timeout)
        try:
            if method.server_streaming:
                reply = b"".join([item async for item in call])
            else:
                reply = await call
        except grpc.aio.AioRpcError as error:
            return Answer(
                error.code(),
                error.details() or "",
                b"",
                tuple(error.trailing_metadata() or ()),
            )
        return Answer(grpc.StatusCode.OK, "", reply, tuple(await call.trailing_metadata() or ()))

    async def serving(self, process: str) -> bool:
        reply = await health_pb2_grpc.HealthStub(self.channel(process)).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def log_lines(self, process: str, answers: list[Answer]) -> str:
        """What ``process`` logged about ``answers`` (by their request ids), to show why a
        call failed."""
        wanted = {value for a in answers for key, value in a.trailers if key == "x-request-id"}
        lines = self.platform.service(process).log_path.read_text().splitlines()
        return "\n".join(line for line in lines if any(str(w) in line for w in wanted))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@pytest.fixture(scope="package")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    # Small pools: the Postgres is shared with other suites, and a refused connection
    # would show up here as the service's INTERNAL, not as the input's fault.
    small_pools = {name: {"TAILOR_PG_POOL_MAX": "3"} for name in SERVICE_NAMES}
    async with running_platform(
        infra, tmp_path_factory.mktemp("hostile-logs"), SERVICE_NAMES, env=small_pools, prefix="ho"
    ) as running:
        yield running


@pytest.fixture(scope="package")
async def caller(platform: RunningPlatform) -> AsyncIterator[Caller]:
    found = Caller(platform)
    try:
        yield found
    finally:
        await found.close()
