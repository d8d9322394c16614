"""Quality count rows folded into the GetQualityMetrics answer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, ingest_pb2
from tailor_core.envelopes import timestamp

_OUTCOMES = {
    "accepted": "accepted",
    "accepted_with_warnings": "accepted_with_warnings",
    "duplicate": "duplicates",
    "rejected": "rejected",
    "suppressed": "suppressed",
}


def quality_report(rows: Iterable[Any]) -> list[admin_pb2.SourceQuality]:
    """Rows of (source_id, bucket, metric, reason, purpose, count), sorted by source, bucket."""
    report: dict[tuple[str, datetime], admin_pb2.SourceQuality] = {}
    for row in rows:
        key = (row["source_id"], row["bucket"])
        entry = report.get(key)
        if entry is None:
            entry = report[key] = admin_pb2.SourceQuality(
                source_id=row["source_id"], bucket_start=timestamp(row["bucket"])
            )
        metric, reason, count = row["metric"], row["reason"], int(row["count"])
        if metric in _OUTCOMES:
            setattr(entry, _OUTCOMES[metric], getattr(entry, _OUTCOMES[metric]) + count)
        elif metric == "rejection":
            entry.rejections_by_reason.add(
                reason=events_pb2.ValidationReason.Value(reason), count=count
            )
        elif metric == "warning":
            entry.warnings_by_reason.add(
                reason=events_pb2.ValidationReason.Value(reason), count=count
            )
        elif metric == "suppression":
            entry.suppressions.add(
                reason=ingest_pb2.SuppressionReason.Value(reason),
                purpose=row["purpose"],
                count=count,
            )
    return list(report.values())
