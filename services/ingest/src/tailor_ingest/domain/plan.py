# TEMPORARY STUB (untracked) until the ingest-validation branch lands.
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class QualitySettings:
    max_clock_skew: timedelta = timedelta(minutes=10)
    max_event_age: timedelta = timedelta(days=400)


@dataclass(frozen=True)
class TrackingPlan:
    source_id: str
    version: int = 0
    events: dict[str, object] = field(default_factory=dict)
    default_collection_purpose: str = ""
    quality: QualitySettings = QualitySettings()
    updated_at: datetime | None = None
    updated_by: str = ""


def collection_purpose(plan: TrackingPlan | None, name: str) -> str:
    if plan and plan.default_collection_purpose:
        return plan.default_collection_purpose
    if name in ("Order Completed", "Order Refunded", "Order Cancelled", "Order Returned"):
        return "necessary"
    return "analytics"
