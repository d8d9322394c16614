"""Domain errors: what went wrong, in terms a caller can act on, without importing gRPC.

One interceptor (tailor_core.interceptors) maps them to gRPC status codes, with field
violations carried as ``google.rpc.BadRequest`` details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path in the request (``events[3].properties.price``) and why."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of every error a handler raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        field_violations: Sequence[FieldViolation] = (),
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_violations = list(field_violations)
        #: Machine-readable cause (google.rpc.ErrorInfo.reason), e.g. "CONSENT_REQUIRED".
        self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    code = ErrorCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = ErrorCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    code = ErrorCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent change won (e.g. an optimistic version check failed): read and retry."""

    code = ErrorCode.ABORTED


class ResourceExhausted(DomainError):
    """Too much at once: the caller should retry after ``retry_after_seconds``.

    The delay travels as ``google.rpc.RetryInfo`` beside the status.
    """

    code = ErrorCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        field_violations: Sequence[FieldViolation] = (),
        *,
        retry_after_seconds: float = 1.0,
    ) -> None:
        super().__init__(message, field_violations)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(DomainError):
    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    """The work would take longer than the caller allowed."""

    code = ErrorCode.DEADLINE_EXCEEDED
