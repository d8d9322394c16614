# TEMPORARY STUB (untracked) until the ingest-validation branch lands.
from __future__ import annotations

from tailor.ingest.v1 import admin_pb2
from tailor_ingest.domain.plan import TrackingPlan


def plan_from_proto(message: admin_pb2.TrackingPlan) -> TrackingPlan:
    return TrackingPlan(
        source_id=message.source_id,
        version=message.version,
        default_collection_purpose=message.default_collection_purpose,
    )


def plan_to_proto(plan: TrackingPlan) -> admin_pb2.TrackingPlan:
    return admin_pb2.TrackingPlan(source_id=plan.source_id, version=plan.version)
