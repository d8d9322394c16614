"""The consent ledger's rules: plain Python, no gRPC, SQL or NATS.

A decision is appended, never changed. What a subject allows now is a fold over its
decisions: per purpose, the latest decision counts; a grant past its expiry counts as
denied; with no decision, the subject's jurisdiction decides (GDPR: denied until granted;
CCPA: allowed until opted out); ``always_allowed`` purposes (``necessary``) are allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tailor_core.errors import FieldViolation, InvalidArgument

MAX_SUBJECT_LENGTH = 256
MAX_TEXT_LENGTH = 256
MAX_PURPOSES_PER_CALL = 32
PURPOSE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DecisionKind(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"


class Jurisdiction(StrEnum):
    GDPR = "gdpr"
    CCPA = "ccpa"


class Source(StrEnum):
    BANNER = "banner"
    APP_SETTINGS = "app_settings"
    SUPPORT = "support"
    API = "api"
    IDENTITY_MERGE = "identity_merge"


@dataclass(frozen=True, slots=True)
class Purpose:
    name: str
    description: str
    built_in: bool = False
    always_allowed: bool = False
    allowed_services: tuple[str, ...] = ()


#: The registry every installation starts with (ARCHITECTURE.md §5).
DEFAULT_PURPOSES = (
    Purpose(
        "necessary", "Processing needed to provide the service the subject asked for", True, True
    ),
    Purpose(
        "analytics", "Collecting behaviour to understand use", True, False, ("ingest", "profile")
    ),
    Purpose(
        "personalization", "Profile-based recommendations", True, False, ("profile", "recommend")
    ),
    Purpose("marketing", "Segments for campaigns", True, False, ("profile", "segment")),
    Purpose("third_party_sharing", "Sharing with third parties", True, False, ()),
)


@dataclass(frozen=True, slots=True)
class DecisionMetadata:
    source: Source
    jurisdiction: Jurisdiction
    policy_version: str = ""
    proof_reference: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """One ledger entry."""

    decision_id: str
    subject_id: str
    purpose: str
    kind: DecisionKind
    metadata: DecisionMetadata
    decided_at: datetime
    recorded_at: datetime
    expires_at: datetime | None = None
    inherited_from: str = ""


@dataclass(frozen=True, slots=True)
class PurposeState:
    purpose: str
    allowed: bool
    reason: str  # granted, denied, withdrawn, expired, necessary, default_gdpr, default_ccpa
    decision: Decision | None = None

    @property
    def is_default(self) -> bool:
        return self.decision is None and self.reason.startswith("default_")


def evaluate(
    purpose: Purpose,
    latest: Decision | None,
    jurisdiction: Jurisdiction,
    now: datetime,
) -> PurposeState:
    """Whether ``purpose`` may be processed now, given the latest decision about it."""
    if purpose.always_allowed:
        return PurposeState(purpose.name, True, "necessary", latest)
    if latest is None:
        allowed = jurisdiction is Jurisdiction.CCPA
        return PurposeState(purpose.name, allowed, f"default_{jurisdiction.value}")
    if latest.kind is DecisionKind.GRANTED:
        if latest.expires_at is not None and latest.expires_at <= now:
            return PurposeState(purpose.name, False, "expired", latest)
        return PurposeState(purpose.name, True, "granted", latest)
    return PurposeState(purpose.name, False, latest.kind.value, latest)


def latest_per_purpose(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """The decision in force per purpose: the latest decided, recording order breaking ties."""
    latest: dict[str, Decision] = {}
    for decision in decisions:  # in recording order
        current = latest.get(decision.purpose)
        if current is None or decision.decided_at >= current.decided_at:
            latest[decision.purpose] = decision
    return latest


def validate_subject(subject_id: str, field_name: str = "subject_id") -> list[FieldViolation]:
    if not subject_id.strip():
        return [FieldViolation(field_name, "must not be empty", "REQUIRED")]
    if len(subject_id) > MAX_SUBJECT_LENGTH:
        return [FieldViolation(field_name, f"at most {MAX_SUBJECT_LENGTH} characters", "TOO_LONG")]
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject_id):
        # Postgres cannot store NUL, and no real id holds a control character.
        return [FieldViolation(field_name, "no control characters", "CONTROL_CHARACTERS")]
    return []


def validate_purposes(
    purposes: Sequence[str], registry: dict[str, Purpose], field_name: str = "purposes"
) -> list[FieldViolation]:
    if not purposes:
        return [FieldViolation(field_name, "name at least one purpose", "REQUIRED")]
    if len(purposes) > MAX_PURPOSES_PER_CALL:
        return [FieldViolation(field_name, f"at most {MAX_PURPOSES_PER_CALL}", "TOO_MANY")]
    return [
        FieldViolation(f"{field_name}[{i}]", f"unknown purpose {name[:64]!r}", "UNKNOWN_PURPOSE")
        for i, name in enumerate(purposes)
        if name not in registry
    ]


def validate_text(value: str, field_name: str) -> list[FieldViolation]:
    if len(value) > MAX_TEXT_LENGTH:
        return [FieldViolation(field_name, f"at most {MAX_TEXT_LENGTH} characters", "TOO_LONG")]
    return []


def raise_if(violations: list[FieldViolation], message: str = "invalid request") -> None:
    if violations:
        raise InvalidArgument(message, violations)


@dataclass
class RecordCommand:
    """Grant, deny or withdraw ``purposes`` for a subject (the imperative of a decision)."""

    subject_id: str
    purposes: list[str]
    kind: DecisionKind
    metadata: DecisionMetadata
    decided_at: datetime | None = None
    expires_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
