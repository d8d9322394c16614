"""Protobuf <-> domain conversion for the consent service's servicers."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from tailor.consent.v1 import consent_pb2 as pb
from tailor_consent.domain.ledger import (
    Decision,
    DecisionKind,
    DecisionMetadata,
    Jurisdiction,
    Purpose,
    PurposeState,
    Source,
)
from tailor_core.envelopes import timestamp
from tailor_core.errors import FieldViolation, InvalidArgument

_SOURCES = {
    pb.CONSENT_SOURCE_BANNER: Source.BANNER,
    pb.CONSENT_SOURCE_APP_SETTINGS: Source.APP_SETTINGS,
    pb.CONSENT_SOURCE_SUPPORT: Source.SUPPORT,
    pb.CONSENT_SOURCE_API: Source.API,
    pb.CONSENT_SOURCE_IDENTITY_MERGE: Source.IDENTITY_MERGE,
}
_SOURCES_BACK = {v: k for k, v in _SOURCES.items()}
_JURISDICTIONS = {pb.JURISDICTION_GDPR: Jurisdiction.GDPR, pb.JURISDICTION_CCPA: Jurisdiction.CCPA}
_JURISDICTIONS_BACK = {v: k for k, v in _JURISDICTIONS.items()}
_KINDS_BACK = {
    DecisionKind.GRANTED: pb.DECISION_KIND_GRANTED,
    DecisionKind.DENIED: pb.DECISION_KIND_DENIED,
    DecisionKind.WITHDRAWN: pb.DECISION_KIND_WITHDRAWN,
}


def utc(stamp: Timestamp, path: str) -> datetime:
    """``stamp`` as an aware datetime; INVALID_ARGUMENT naming ``path`` when it is outside
    any calendar (negative nanos, seconds past year 9999)."""
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument(
            f"{path} is not a valid timestamp",
            [FieldViolation(path, "not a valid timestamp (RFC 3339 range)", "TIMESTAMP_MALFORMED")],
        ) from None


def metadata(
    message: pb.DecisionMetadata, has_metadata: bool
) -> tuple[DecisionMetadata, datetime | None]:
    """Domain metadata and the stated decision time; source is required."""
    source = _SOURCES.get(message.source) if has_metadata else None
    if source is None:
        raise InvalidArgument(
            "missing decision source",
            [FieldViolation("metadata.source", "say where the decision was collected", "REQUIRED")],
        )
    jurisdiction = _JURISDICTIONS.get(message.jurisdiction, Jurisdiction.GDPR)
    decided_at = (
        utc(message.decided_at, "metadata.decided_at") if message.HasField("decided_at") else None
    )
    return (
        DecisionMetadata(source, jurisdiction, message.policy_version, message.proof_reference),
        decided_at,
    )


def decision(value: Decision) -> pb.ConsentDecision:
    message = pb.ConsentDecision(
        decision_id=value.decision_id,
        subject_id=value.subject_id,
        purpose=value.purpose,
        kind=_KINDS_BACK[value.kind],
        metadata=pb.DecisionMetadata(
            source=_SOURCES_BACK[value.metadata.source],
            jurisdiction=_JURISDICTIONS_BACK[value.metadata.jurisdiction],
            policy_version=value.metadata.policy_version,
            proof_reference=value.metadata.proof_reference,
            decided_at=timestamp(value.decided_at),
        ),
        recorded_at=timestamp(value.recorded_at),
        inherited_from=value.inherited_from,
    )
    if value.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(value.expires_at))
    return message


def purpose_state(state: PurposeState) -> pb.PurposeState:
    message = pb.PurposeState(
        purpose=state.purpose, allowed=state.allowed, is_default=state.is_default
    )
    if state.decision is not None:
        message.decision.CopyFrom(decision(state.decision))
    return message


def purpose(value: Purpose) -> pb.Purpose:
    return pb.Purpose(
        name=value.name,
        description=value.description,
        built_in=value.built_in,
        always_allowed=value.always_allowed,
        allowed_services=list(value.allowed_services),
    )
