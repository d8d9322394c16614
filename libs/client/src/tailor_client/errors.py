"""One exception per kind of failure, so callers can act on it without reading status codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A field of the request that was wrong, and why (``reason`` is machine-readable)."""

    field: str
    description: str
    reason: str


class TailorError(Exception):
    """Base of every error the client raises; ``code`` is the gRPC status code.

    ``violations`` are the request's fields at fault (``google.rpc.BadRequest``); ``reason``
    and ``metadata`` the machine-readable cause (``google.rpc.ErrorInfo``), e.g. reason
    ``CONSENT_REQUIRED`` with metadata ``{"purpose": "personalization"}``, empty without one;
    ``retry_after_seconds`` the server's ``google.rpc.RetryInfo`` delay.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: Whether sending the same request again later may succeed.
    retryable = False

    def __init__(
        self,
        message: str,
        violations: tuple[FieldViolation, ...] = (),
        retry_after_seconds: float | None = None,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def violation(self, field: str) -> FieldViolation | None:
        """The first violation of ``field`` (e.g. ``"rule.text"``), or None."""
        return next((v for v in self.violations if v.field == field), None)


class InvalidArgument(TailorError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(TailorError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TailorError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(TailorError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ConsentRequired(PermissionDenied):
    """The subject has no current consent for the purpose the call named (ErrorInfo reason
    ``CONSENT_REQUIRED``); ``purpose`` says which."""

    @property
    def purpose(self) -> str:
        return self.metadata.get("purpose", "")


class Unauthenticated(TailorError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(TailorError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TailorError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(TailorError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True


class Unavailable(TailorError):
    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(TailorError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class Internal(TailorError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(TailorError):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE: dict[grpc.StatusCode, type[TailorError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
        Unimplemented,
    )
}
#: ErrorInfo reasons with an exception of their own (a subclass of the code's exception).
_BY_REASON: dict[str, type[TailorError]] = {"CONSENT_REQUIRED": ConsentRequired}


def from_rpc_error(error: grpc.RpcError) -> TailorError:
    """The client exception for a failed call, with its field violations, error info and
    retry delay."""
    code = error.code()
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    reason = ""
    metadata: dict[str, str] = {}
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description, v.reason)
                for v in bad_request.field_violations
            ]
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    cls = _BY_CODE.get(code, TailorError)
    special = _BY_REASON.get(reason)
    if special is not None and issubclass(special, cls):
        cls = special
    failure = cls(
        error.details() or code.name,
        tuple(violations),
        retry_after,
        reason=reason,
        metadata=metadata,
    )
    if cls is TailorError:
        failure.code = code
    return failure
