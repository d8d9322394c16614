"""The gRPC adapters of ingest: protobuf in, domain calls, protobuf out. No SQL, no rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor_core.envelopes import timestamp
from tailor_core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tailor_core.interceptors import current_principal
from tailor_core.wire import check_text, request_duration, request_time
from tailor_ingest.adapters import repository
from tailor_ingest.api_keys import ApiKeyRegistry, Caller
from tailor_ingest.capacity import Capacity
from tailor_ingest.collector import REJECTED, Collector
from tailor_ingest.domain.api_keys import ApiKey
from tailor_ingest.domain.plan import TrackingPlan
from tailor_ingest.domain.validation import validate_event
from tailor_ingest.entrypoints import paging
from tailor_ingest.entrypoints.convert import plan_from_proto
from tailor_ingest.key_admin import KeyAdmin
from tailor_ingest.plans import PlanBook, check_source_id
from tailor_ingest.quality_report import quality_report

MAX_BATCH = 500
#: How long a stream waits for its key's rate limit before failing with RESOURCE_EXHAUSTED.
MAX_STREAM_THROTTLE_SECONDS = 2.0


def _violations(issues: Any) -> list[FieldViolation]:
    return [
        FieldViolation(
            issue.field, issue.description, events_pb2.ValidationReason.Name(issue.reason)
        )
        for issue in issues
    ]


def _check_count(count: int, field: str) -> None:
    if not 1 <= count <= MAX_BATCH:
        raise InvalidArgument(
            f"send 1..{MAX_BATCH} events per call, not {count}",
            [FieldViolation(field, f"1..{MAX_BATCH} events", "BATCH_SIZE")],
        )


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, collector: Collector, keys: ApiKeyRegistry, capacity: Capacity) -> None:
        self._collector = collector
        self._keys = keys
        self._capacity = capacity

    async def _caller(self) -> Caller:
        return await self._keys.caller(current_principal())

    async def _one(self, request: Any, kind: str) -> ingest_pb2.EventResult:
        if not request.HasField("event"):
            raise InvalidArgument(
                "event is required", [FieldViolation("event", "required", "REQUIRED")]
            )
        caller = await self._caller()
        self._keys.check_rate(caller, 1)
        self._capacity.try_reserve(1)
        try:
            [result] = await self._collector.collect(caller, [request.event], expected_kind=kind)
        finally:
            await self._capacity.release(1)
        if result.outcome == REJECTED:
            raise InvalidArgument(
                f"event rejected: {len(result.errors)} problem(s)", _violations(result.errors)
            )
        return result

    async def Track(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.TrackResponse(result=await self._one(request, "track"))

    async def Identify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.IdentifyResponse(result=await self._one(request, "identify"))

    async def Page(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.PageResponse(result=await self._one(request, "page"))

    async def Screen(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.ScreenResponse(result=await self._one(request, "screen"))

    async def Group(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.GroupResponse(result=await self._one(request, "group"))

    async def Alias(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return ingest_pb2.AliasResponse(result=await self._one(request, "alias"))

    async def Batch(
        self, request: ingest_pb2.BatchRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.BatchResponse:
        count = len(request.events)
        _check_count(count, "events")
        caller = await self._caller()
        self._keys.check_rate(caller, count)
        self._capacity.try_reserve(count)
        try:
            results = await self._collector.collect(caller, request.events)
        finally:
            await self._capacity.release(count)
        return ingest_pb2.BatchResponse(results=results)

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[ingest_pb2.StreamEventsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ingest_pb2.StreamEventsResponse]:
        caller = await self._caller()
        last: int | None = None
        async for request in request_iterator:
            count = len(request.events)
            _check_count(count, "events")
            for index, sequenced in enumerate(request.events):
                if last is not None and sequenced.sequence <= last:
                    raise InvalidArgument(
                        "sequence numbers must increase over the stream",
                        [
                            FieldViolation(
                                f"events[{index}].sequence",
                                f"{sequenced.sequence} is not greater than {last}",
                                "SEQUENCE_NOT_INCREASING",
                            )
                        ],
                    )
                last = sequenced.sequence
            await self._throttle(caller, count)
            # Waiting here, rather than failing, is the stream's back-pressure: while we do
            # not read, HTTP/2 flow control stops the client.
            await self._capacity.reserve(count)
            try:
                results = await self._collector.collect(caller, [s.event for s in request.events])
            finally:
                await self._capacity.release(count)
            yield ingest_pb2.StreamEventsResponse(
                acks=[
                    ingest_pb2.EventAck(sequence=s.sequence, result=r)
                    for s, r in zip(request.events, results, strict=True)
                ]
            )

    async def _throttle(self, caller: Caller, count: int) -> None:
        deadline = time.monotonic() + MAX_STREAM_THROTTLE_SECONDS
        while (wait := self._keys.admit(caller, count)) > 0:
            if time.monotonic() + wait > deadline:
                raise ResourceExhausted(
                    f"rate limit of key {caller.key_id} reached; resend unacknowledged events",
                    retry_after_seconds=wait,
                )
            await asyncio.sleep(wait)


def _key_proto(key: ApiKey) -> admin_pb2.ApiKey:
    message = admin_pb2.ApiKey(
        key_id=key.key_id,
        source_id=key.source_id,
        scopes=list(key.scopes),
        rate_limit_per_second=key.rate_limit_per_second,
        burst=key.burst,
        label=key.label,
        created_by=key.created_by,
    )
    for name in ("created_at", "revoked_at", "expires_at", "last_used_at"):
        value = getattr(key, name)
        if value is not None:
            getattr(message, name).CopyFrom(timestamp(value))
    return message


def _range(request: Any, field: str = "range") -> tuple[datetime | None, datetime | None]:
    start = request_time(request.range, "start", f"{field}.start")
    end = request_time(request.range, "end", f"{field}.end")
    if start is not None and end is not None and end <= start:
        raise InvalidArgument(
            "the range ends before it starts",
            [FieldViolation(f"{field}.end", "must be after range.start", "INVERTED_RANGE")],
        )
    return start, end


class IngestAdminServicer(admin_pb2_grpc.IngestAdminServiceServicer):
    def __init__(self, keys: KeyAdmin, plans: PlanBook, pool: Any) -> None:
        self._keys = keys
        self._plans = plans
        self._pool = pool

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        key, secret = await self._keys.create(
            source_id=request.source_id,
            scopes=tuple(request.scopes),
            rate_limit_per_second=request.rate_limit_per_second,
            burst=request.burst,
            label=request.label,
            expires_at=request_time(request, "expires_at", "expires_at"),
            created_by=current_principal().id,
        )
        return admin_pb2.CreateApiKeyResponse(key=_key_proto(key), secret=secret)

    async def GetApiKey(
        self, request: admin_pb2.GetApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetApiKeyResponse:
        return admin_pb2.GetApiKeyResponse(key=_key_proto(await self._keys.get(request.key_id)))

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        if request.source_id:
            check_source_id(request.source_id, "source_id")
        filters = [request.source_id, request.include_revoked]
        cursor = paging.read(request.page.page_token, filters)
        size = paging.page_size(request.page.page_size, 50, 500)
        before = (datetime.fromisoformat(cursor[0]), str(cursor[1])) if cursor else None
        keys = await self._keys.list(request.source_id, request.include_revoked, before, size + 1)
        response = admin_pb2.ListApiKeysResponse(keys=[_key_proto(k) for k in keys[:size]])
        response.page.total_size = -1
        if len(keys) > size:
            last = keys[size - 1]
            assert last.created_at is not None
            response.page.next_page_token = paging.issue(
                [last.created_at.isoformat(), last.key_id], filters
            )
        return response

    async def UpdateApiKey(
        self, request: admin_pb2.UpdateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UpdateApiKeyResponse:
        changes: dict[str, Any] = {}
        for path in request.update_mask.paths:
            if path == "scopes":
                changes[path] = tuple(request.key.scopes)
            elif path == "expires_at":
                changes[path] = request_time(request.key, "expires_at", "key.expires_at")
            elif path in ("label", "rate_limit_per_second", "burst"):
                changes[path] = getattr(request.key, path)
            else:
                changes[path] = None  # KeyAdmin.update names it as not updatable
        key = await self._keys.update(request.key.key_id, changes)
        return admin_pb2.UpdateApiKeyResponse(key=_key_proto(key))

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeApiKeyResponse:
        return admin_pb2.RevokeApiKeyResponse(
            key=_key_proto(await self._keys.revoke(request.key_id))
        )

    async def PutTrackingPlan(
        self, request: admin_pb2.PutTrackingPlanRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PutTrackingPlanResponse:
        if not request.HasField("plan"):
            raise InvalidArgument("plan is required", [FieldViolation("plan", "required", "")])
        plan = await self._plans.put(request.plan, request.expected_version, current_principal().id)
        return admin_pb2.PutTrackingPlanResponse(plan=plan)

    async def GetTrackingPlan(
        self, request: admin_pb2.GetTrackingPlanRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetTrackingPlanResponse:
        plan = await self._plans.get(request.source_id, request.version)
        return admin_pb2.GetTrackingPlanResponse(plan=plan)

    async def ListTrackingPlans(
        self, request: admin_pb2.ListTrackingPlansRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTrackingPlansResponse:
        cursor = paging.read(request.page.page_token, [])
        size = paging.page_size(request.page.page_size, 50, 500)
        plans, last = await self._plans.list_current(str(cursor[0]) if cursor else "", size)
        response = admin_pb2.ListTrackingPlansResponse(plans=plans)
        response.page.total_size = -1
        if last:
            response.page.next_page_token = paging.issue([last], [])
        return response

    async def DeleteTrackingPlan(
        self, request: admin_pb2.DeleteTrackingPlanRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTrackingPlanResponse:
        version = await self._plans.delete(request.source_id)
        return admin_pb2.DeleteTrackingPlanResponse(deleted_version=version)

    async def ValidateEvents(
        self, request: admin_pb2.ValidateEventsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ValidateEventsResponse:
        _check_count(len(request.events), "events")
        if request.HasField("proposed_plan"):
            plan: TrackingPlan | None = plan_from_proto(request.proposed_plan)
            version, source = 0, request.proposed_plan.source_id or request.source_id
        else:
            check_source_id(request.source_id, "source_id")
            plan = await self._plans.current(request.source_id)
            if plan is None:
                raise NotFound(f"source {request.source_id} has no plan; propose one")
            version, source = plan.version, request.source_id
        now = datetime.now(UTC)
        results = []
        for original in request.events:
            event = events_pb2.CustomerEvent()
            event.CopyFrom(original)
            event.source_id = source
            verdict = validate_event(event, plan, now=now)
            result = ingest_pb2.EventResult(message_id=event.message_id)
            if verdict.rejected:
                result.outcome = REJECTED
                result.errors.extend(verdict.errors)
            else:
                result.outcome = ingest_pb2.EVENT_OUTCOME_ACCEPTED
                result.warnings.extend(verdict.warnings)
            results.append(result)
        return admin_pb2.ValidateEventsResponse(results=results, plan_version=version)

    async def ListRejectedEvents(
        self, request: admin_pb2.ListRejectedEventsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListRejectedEventsResponse:
        start, end = _range(request)
        if request.source_id:
            check_source_id(request.source_id, "source_id")
        check_text(request.event, "event", 200)
        filters = [request.source_id, int(request.reason), request.event, str(start), str(end)]
        cursor = paging.read(request.page.page_token, filters)
        size = paging.page_size(request.page.page_size, 100, 1000)
        before = (datetime.fromisoformat(cursor[0]), str(cursor[1])) if cursor else None
        async with self._pool.acquire() as conn:
            rows = await repository.list_rejections(
                conn,
                source_id=request.source_id,
                reason=int(request.reason),
                event_name=request.event,
                start=start,
                end=end,
                before=before,
                limit=size + 1,
            )
        response = admin_pb2.ListRejectedEventsResponse(
            events=[_rejected_proto(row) for row in rows[:size]]
        )
        response.page.total_size = -1
        if len(rows) > size:
            last = rows[size - 1]
            response.page.next_page_token = paging.issue(
                [last.rejected_at.isoformat(), last.rejection_id], filters
            )
        return response

    async def GetRejectedEvent(
        self, request: admin_pb2.GetRejectedEventRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetRejectedEventResponse:
        check_text(request.rejection_id, "rejection_id", 400)
        async with self._pool.acquire() as conn:
            row = await repository.get_rejection(conn, request.rejection_id)
        if row is None:
            raise NotFound("no such rejected event (or it was erased)")
        return admin_pb2.GetRejectedEventResponse(event=_rejected_proto(row))

    async def GetQualityMetrics(
        self, request: admin_pb2.GetQualityMetricsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetQualityMetricsResponse:
        start, end = _range(request)
        if start is None:
            raise InvalidArgument(
                "the range needs a start",
                [FieldViolation("range.start", "required", "REQUIRED")],
            )
        end = end or datetime.now(UTC) + timedelta(minutes=1)
        if request.source_id:
            check_source_id(request.source_id, "source_id")
        bucket = request_duration(request, "bucket", "bucket")
        if bucket is not None and (bucket < timedelta(minutes=1) or (end - start) / bucket > 1000):
            raise InvalidArgument(
                "bucket too small",
                [
                    FieldViolation(
                        "bucket", "at least a minute, and at most 1000 buckets", "BUCKET_SIZE"
                    )
                ],
            )
        async with self._pool.acquire() as conn:
            rows = await repository.query_counts(
                conn, source_id=request.source_id, start=start, end=end, bucket=bucket
            )
        return admin_pb2.GetQualityMetricsResponse(sources=quality_report(rows))


def _rejected_proto(row: repository.RejectionRow) -> admin_pb2.RejectedEvent:
    return admin_pb2.RejectedEvent(
        rejection_id=row.rejection_id,
        rejection=events_pb2.EventRejected.FromString(row.rejection),
        rejected_at=timestamp(row.rejected_at),
    )
