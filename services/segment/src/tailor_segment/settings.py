"""The segment service's own settings, on top of the core's."""

from __future__ import annotations

from pydantic import Field

from tailor_core.settings import ServiceSettings


class SegmentSettings(ServiceSettings):
    #: Seconds between rounds of the membership clock (windows expiring, sequences timing
    #: out): the lag of a clock-driven exit is at most about this.
    clock_seconds: float = Field(default=0.25, gt=0, le=60)
    #: Days of event facts kept for windowed rules; older facts are pruned. A rule's window
    #: (plus a sequence's time) cannot be longer.
    event_retention_days: int = Field(default=400, ge=1, le=3650)
    #: Seconds between scheduled discovery runs (K-Means); 0 turns the schedule off.
    clustering_interval_seconds: float = Field(default=24 * 3600, ge=0, le=30 * 24 * 3600)
    #: Subjects evaluated per transaction when a new segment version is backfilled.
    backfill_batch: int = Field(default=200, ge=1, le=5000)
    #: Events fetched and applied per transaction.
    events_batch: int = Field(default=200, ge=1, le=5000)
