# TEMPORARY STUB (untracked) until the ingest-validation branch lands.
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from tailor.events.v1 import events_pb2
from tailor_ingest.domain.plan import TrackingPlan, collection_purpose


@dataclass
class Verdict:
    errors: list[events_pb2.FieldIssue] = field(default_factory=list)
    warnings: list[events_pb2.FieldIssue] = field(default_factory=list)
    event_name: str = ""
    purpose: str = ""

    @property
    def rejected(self) -> bool:
        return bool(self.errors)


def validate_event(
    event: events_pb2.CustomerEvent,
    plan: TrackingPlan | None,
    *,
    now: datetime,
    expected_kind: str | None = None,
) -> Verdict:
    kind = event.WhichOneof("kind") or ""
    name = f"track:{event.track.event}" if kind == "track" else kind
    verdict = Verdict(
        event_name=name,
        purpose=collection_purpose(plan, event.track.event if kind == "track" else kind),
    )
    if not event.user_id and not event.anonymous_id:
        verdict.errors.append(
            events_pb2.FieldIssue(
                field="user_id",
                reason=events_pb2.VALIDATION_REASON_MISSING_IDENTITY,
                description="user_id or anonymous_id required",
            )
        )
    if expected_kind and kind != expected_kind:
        verdict.errors.append(
            events_pb2.FieldIssue(
                field="kind", reason=events_pb2.VALIDATION_REASON_KIND_MISMATCH, description="kind"
            )
        )
    if kind == "track":
        for i, p in enumerate(event.track.order.products):
            if p.quantity < 0:
                verdict.errors.append(
                    events_pb2.FieldIssue(
                        field=f"track.order.products[{i}].quantity",
                        reason=events_pb2.VALIDATION_REASON_NEGATIVE_QUANTITY,
                        description="negative",
                    )
                )
    if not event.HasField("timestamp"):
        event.timestamp.FromDatetime(now)
    return verdict


def derive_message_id(event: events_pb2.CustomerEvent) -> str:
    copy = events_pb2.CustomerEvent()
    copy.CopyFrom(event)
    copy.message_id = ""
    copy.ClearField("sent_at")
    copy.source_id = ""
    return "d-" + hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]
