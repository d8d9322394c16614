"""Tracking plans: which events and properties a source may send, and its quality limits.

A plan is stored as its protobuf; this is the checked, ready-to-use form validation reads
(patterns compiled, rules indexed by name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from tailor.ingest.v1 import admin_pb2

TRANSACTIONAL_EVENTS = frozenset(
    {"Order Completed", "Order Refunded", "Order Cancelled", "Order Returned"}
)
PURPOSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
ACCEPT_FLAGGED = admin_pb2.UNPLANNED_POLICY_ACCEPT_FLAGGED
REJECT = admin_pb2.UNPLANNED_POLICY_REJECT
DROP = admin_pb2.UNPLANNED_POLICY_DROP


@dataclass(frozen=True, slots=True)
class QualitySettings:
    """A source's data-quality limits (the defaults are admin.proto's)."""

    max_clock_skew: timedelta = timedelta(minutes=10)
    max_event_age: timedelta = timedelta(days=400)
    min_age: int = 13
    max_age: int = 120
    max_properties: int = 255
    max_string_length: int = 8192
    max_event_bytes: int = 32768


DEFAULT_QUALITY = QualitySettings()


@dataclass(frozen=True, slots=True)
class PropertyRule:
    name: str
    type: int = admin_pb2.PROPERTY_TYPE_UNSPECIFIED
    required: bool = False
    allowed_values: frozenset[str] = frozenset()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 0
    personal: bool = False
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class EventRule:
    event: str
    properties: tuple[PropertyRule, ...] = ()
    unplanned_properties: int = ACCEPT_FLAGGED
    collection_purpose: str = ""

    @property
    def top_level_names(self) -> frozenset[str]:
        return frozenset(rule.name.split(".", 1)[0] for rule in self.properties)


@dataclass(frozen=True, slots=True)
class TrackingPlan:
    source_id: str
    version: int = 0
    events: dict[str, EventRule] = field(default_factory=dict)
    unplanned_events: int = ACCEPT_FLAGGED
    default_collection_purpose: str = ""
    quality: QualitySettings = DEFAULT_QUALITY
    description: str = ""


def collection_purpose(plan: TrackingPlan | None, name: str) -> str:
    """The consent purpose an event named ``name`` (or a call kind) needs to be kept."""
    if plan is not None:
        rule = plan.events.get(name)
        if rule is not None and rule.collection_purpose:
            return rule.collection_purpose
        if plan.default_collection_purpose:
            return plan.default_collection_purpose
    return "necessary" if name in TRANSACTIONAL_EVENTS else "analytics"
