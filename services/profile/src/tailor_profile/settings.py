"""The profile service's own settings, on top of the core's."""

from __future__ import annotations

from pydantic import Field

from tailor_core.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    #: Currency revenue figures are kept in (ISO 4217); money in others counts towards
    #: orders but not revenue. GBP fits the UCI Online Retail sample.
    reporting_currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$")
    #: Seconds between batch job runs (RFM, cohort statistics, staleness) on the schedule.
    batch_interval_seconds: float = Field(default=6 * 3600, ge=1, le=7 * 24 * 3600)
    #: Seconds between rounds of the window clock (7 d / 30 d figures moving without events).
    window_clock_seconds: float = Field(default=60, gt=0, le=3600)
    #: Seconds between heartbeats of the partition owner (replicas rebalance at this pace).
    partition_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    #: Events fetched and applied per transaction.
    projection_batch: int = Field(default=500, ge=1, le=5000)
