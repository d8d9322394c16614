"""The ingest service's own settings, on top of the core's."""

from __future__ import annotations

from pydantic import Field

from tailor_core.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    #: Events per second a key may send when the key sets no rate of its own.
    default_rate_limit: int = Field(default=5000, ge=1, le=1_000_000)
    #: Events a key may send in a burst above its rate when the key sets no burst.
    default_burst: int = Field(default=10_000, ge=1, le=10_000_000)
    #: Events being processed at once across all calls; beyond it unary and batch calls get
    #: RESOURCE_EXHAUSTED and streams stop reading, so memory stays bounded under overload.
    max_inflight_events: int = Field(default=20_000, ge=500, le=1_000_000)
    #: Port of the Segment-compatible HTTP intake (/v1/track, /v1/batch, …); 0 turns it off.
    http_port: int = Field(default=8052, ge=0, le=65535)
    #: How long accepted message ids are remembered for deduplication, in days.
    dedup_retention_days: int = Field(default=30, ge=1, le=3650)
