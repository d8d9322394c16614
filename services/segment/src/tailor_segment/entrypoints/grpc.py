"""The gRPC adapter of the segment service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tailor.common.v1 import common_pb2
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_core.consent_client import ConsentClient
from tailor_core.envelopes import timestamp
from tailor_core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from tailor_core.interceptors import current_principal
from tailor_core.paging import decode_cursor, encode_token, page_size
from tailor_core.wire import check_text, request_duration
from tailor_segment import discovery
from tailor_segment.adapters import definitions, facts, memberships
from tailor_segment.adapters.definitions import StoredSegment
from tailor_segment.adapters.memberships import Member
from tailor_segment.audit import audit
from tailor_segment.discovery import ClusterRun, Discovery
from tailor_segment.domain import rules
from tailor_segment.domain.audits import AuditThresholds
from tailor_segment.segments import RuleInput, SegmentCommands, check_purpose, rule_problems

MAX_ID = 256
STATES = {
    "BACKFILLING": segment_pb2.SEGMENT_STATE_BACKFILLING,
    "ACTIVE": segment_pb2.SEGMENT_STATE_ACTIVE,
    "DELETED": segment_pb2.SEGMENT_STATE_DELETED,
}
RUN_STATES = {
    "RUNNING": segment_pb2.CLUSTER_RUN_STATE_RUNNING,
    "COMPLETED": segment_pb2.CLUSTER_RUN_STATE_COMPLETED,
    "FAILED": segment_pb2.CLUSTER_RUN_STATE_FAILED,
}


def _rule_input(message: segment_pb2.RuleInput) -> RuleInput:
    form = message.WhichOneof("form")
    if form == "rule":
        return RuleInput(proto=message.rule)
    if form == "text":
        return RuleInput(text=message.text)
    return RuleInput()


def _subject(subject_id: str) -> None:
    if not subject_id:
        raise InvalidArgument(
            "subject_id is required",
            [FieldViolation("subject_id", "give a subject id", "REQUIRED")],
        )
    check_text(subject_id, "subject_id", MAX_ID)


def _segment_id(segment_id: str) -> None:
    if not segment_id:
        raise InvalidArgument(
            "segment_id is required",
            [FieldViolation("segment_id", "give a segment id", "REQUIRED")],
        )
    check_text(segment_id, "segment_id", 64)


def segment_message(segment: StoredSegment, size: int) -> segment_pb2.Segment:
    message = segment_pb2.Segment(
        segment_id=segment.segment_id,
        name=segment.name,
        description=segment.description,
        rule_text=segment.rule_text,
        purpose=segment.purpose,
        version=segment.version,
        size=size,
        state=STATES[segment.state],
        updated_by=segment.updated_by,
        referenced_segment_ids=list(segment.references),
    )
    message.rule.ParseFromString(segment.rule)
    message.created_at.CopyFrom(timestamp(segment.created_at))
    message.updated_at.CopyFrom(timestamp(segment.updated_at))
    if segment.promoted_run:
        message.promoted_from.run_id = segment.promoted_run
        message.promoted_from.cluster_id = segment.promoted_cluster or 0
    return message


def membership_message(member: Member) -> segment_pb2.Membership:
    message = segment_pb2.Membership(
        segment_id=member.segment_id,
        subject_id=member.subject_id,
        reason=member.reason,  # type: ignore[arg-type]
        explanation=member.explanation,
        segment_version=member.segment_version,
    )
    message.entered_at.CopyFrom(timestamp(member.entered_at))
    return message


def run_message(run: ClusterRun, *, with_clusters: bool) -> segment_pb2.ClusterRun:
    message = segment_pb2.ClusterRun(
        run_id=run.run_id,
        state=RUN_STATES[run.state],
        k=run.k or 0,
        silhouette=run.silhouette or 0.0,
        scores=[segment_pb2.KScore(k=s["k"], silhouette=s["silhouette"]) for s in run.scores],
        profiles=run.profiles,
        seed=run.seed,
        features=list(run.features),
        purpose=run.purpose,
        on_demand=run.on_demand,
        error=run.error,
    )
    message.started_at.CopyFrom(timestamp(run.started_at))
    if run.finished_at:
        message.finished_at.CopyFrom(timestamp(run.finished_at))
    if with_clusters:
        for cluster in run.clusters:
            message.clusters.add(
                cluster_id=cluster["cluster_id"],
                size=cluster["size"],
                label=cluster["label"],
                promoted_segment_id=cluster.get("promoted_segment_id", ""),
                features=[
                    segment_pb2.ClusterFeature(
                        feature=f["feature"],
                        cluster_mean=f["cluster_mean"],
                        population_mean=f["population_mean"],
                        z_score=f["z_score"],
                    )
                    for f in cluster["features"]
                ],
            )
    return message


class SegmentServicer(segment_pb2_grpc.SegmentServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        commands: SegmentCommands,
        discovery_runs: Discovery,
        consent: ConsentClient,
    ) -> None:
        self._pool = pool
        self._commands = commands
        self._discovery = discovery_runs
        self._consent = consent

    async def _size(self, segment: StoredSegment) -> int:
        async with self._pool.acquire() as conn:
            return (await definitions.sizes(conn, [segment.segment_id])).get(segment.segment_id, 0)

    async def CreateSegment(self, request: Any, context: Any) -> segment_pb2.CreateSegmentResponse:
        segment = await self._commands.create(
            segment_id=request.segment_id,
            name=request.name,
            description=request.description,
            rule=_rule_input(request.rule),
            purpose=request.purpose,
            created_by=current_principal().id,
        )
        return segment_pb2.CreateSegmentResponse(segment=segment_message(segment, 0))

    async def UpdateSegment(self, request: Any, context: Any) -> segment_pb2.UpdateSegmentResponse:
        segment = await self._commands.update(
            segment_id=request.segment_id,
            expected_version=request.expected_version,
            name=request.name,
            description=request.description if request.HasField("description") else None,
            rule=_rule_input(request.rule) if request.HasField("rule") else None,
            purpose=request.purpose,
            updated_by=current_principal().id,
        )
        return segment_pb2.UpdateSegmentResponse(
            segment=segment_message(segment, await self._size(segment))
        )

    async def DeleteSegment(self, request: Any, context: Any) -> segment_pb2.DeleteSegmentResponse:
        return segment_pb2.DeleteSegmentResponse(
            exited=await self._commands.delete(request.segment_id)
        )

    async def GetSegment(self, request: Any, context: Any) -> segment_pb2.GetSegmentResponse:
        _segment_id(request.segment_id)
        if request.version < 0:
            raise InvalidArgument(
                "bad version", [FieldViolation("version", "0 (current) or more", "OUT_OF_RANGE")]
            )
        async with self._pool.acquire() as conn:
            segment = await definitions.get(conn, request.segment_id, request.version)
            if segment is None:
                raise NotFound(f"no segment {request.segment_id!r} at that version")
            size = 0
            if segment.version == segment.current_version:
                size = (await definitions.sizes(conn, [segment.segment_id])).get(
                    segment.segment_id, 0
                )
        return segment_pb2.GetSegmentResponse(segment=segment_message(segment, size))

    async def ListSegments(self, request: Any, context: Any) -> segment_pb2.ListSegmentsResponse:
        check_text(request.purpose, "purpose", 64)
        limit = page_size(request.page, 50, 500)
        filters = {"p": request.purpose, "d": request.include_deleted}
        cursor = decode_cursor(request.page.page_token, filters)
        async with self._pool.acquire() as conn:
            found = await definitions.page(
                conn,
                purpose=request.purpose,
                include_deleted=request.include_deleted,
                after=str(cursor[0]) if cursor else "",
                limit=limit + 1,
            )
            shown = found[:limit]
            sizes = await definitions.sizes(conn, [s.segment_id for s in shown])
        more = [shown[-1].segment_id] if len(found) > limit else None
        return segment_pb2.ListSegmentsResponse(
            segments=[segment_message(s, sizes.get(s.segment_id, 0)) for s in shown],
            page=common_pb2.PageInfo(next_page_token=encode_token(more, filters)),
        )

    async def ListSegmentVersions(
        self, request: Any, context: Any
    ) -> segment_pb2.ListSegmentVersionsResponse:
        _segment_id(request.segment_id)
        limit = page_size(request.page, 20, 200)
        filters = {"s": request.segment_id}
        cursor = decode_cursor(request.page.page_token, filters)
        async with self._pool.acquire() as conn:
            current = await definitions.get(conn, request.segment_id)
            if current is None:
                raise NotFound(f"no segment {request.segment_id!r}")
            before = int(cursor[0]) if cursor else 0
            found = await definitions.versions(
                conn, request.segment_id, before=before, limit=limit + 1
            )
            size = (await definitions.sizes(conn, [request.segment_id])).get(request.segment_id, 0)
        shown = found[:limit]
        more = [shown[-1].version] if len(found) > limit else None
        return segment_pb2.ListSegmentVersionsResponse(
            versions=[
                segment_message(v, size if v.version == v.current_version else 0) for v in shown
            ],
            page=common_pb2.PageInfo(next_page_token=encode_token(more, filters)),
        )

    async def ValidateRule(self, request: Any, context: Any) -> segment_pb2.ValidateRuleResponse:
        given = _rule_input(request.rule)
        if given.proto is None and given.text is None:
            raise InvalidArgument(
                "a rule is required",
                [FieldViolation("rule", "give the rule's protobuf or text form", "REQUIRED")],
            )
        checked, problems = rule_problems(given)
        if checked is None:
            return segment_pb2.ValidateRuleResponse(
                valid=False,
                problems=[
                    segment_pb2.RuleProblem(
                        path=p.path, line=p.line, column=p.column, message=p.message
                    )
                    for p in problems
                ],
            )
        return segment_pb2.ValidateRuleResponse(
            valid=True, rule=checked.proto, rule_text=checked.text
        )

    async def PreviewSegment(
        self, request: Any, context: Any
    ) -> segment_pb2.PreviewSegmentResponse:
        remaining = context.time_remaining() if context is not None else None
        deadline = None if remaining is None else time.monotonic() + remaining - 0.05
        found = await self._commands.preview(
            _rule_input(request.rule), request.purpose, request.sample_size, deadline
        )
        return segment_pb2.PreviewSegmentResponse(
            size=found.size,
            sample_subject_ids=found.sample,
            rule_text=found.rule_text,
            excluded_without_consent=found.excluded_without_consent,
            population=found.population,
        )

    async def ListMembers(self, request: Any, context: Any) -> segment_pb2.ListMembersResponse:
        _segment_id(request.segment_id)
        limit = page_size(request.page, 100, 1000)
        filters = {"s": request.segment_id}
        cursor = decode_cursor(request.page.page_token, filters)
        after = None
        if cursor:
            try:
                after = (datetime.fromisoformat(str(cursor[0])), str(cursor[1]))
            except (ValueError, IndexError):
                raise InvalidArgument(
                    "bad page token",
                    [FieldViolation("page.page_token", "not a token issued here", "BAD_TOKEN")],
                ) from None
        async with self._pool.acquire() as conn:
            if await definitions.get(conn, request.segment_id) is None:
                raise NotFound(f"no segment {request.segment_id!r}")
            found = await memberships.page(conn, request.segment_id, after, limit + 1)
        shown = found[:limit]
        more = (
            [shown[-1].entered_at.isoformat(), shown[-1].subject_id] if len(found) > limit else None
        )
        return segment_pb2.ListMembersResponse(
            members=[membership_message(m) for m in shown],
            page=common_pb2.PageInfo(next_page_token=encode_token(more, filters)),
        )

    async def IsMember(self, request: Any, context: Any) -> segment_pb2.IsMemberResponse:
        _segment_id(request.segment_id)
        _subject(request.subject_id)
        async with self._pool.acquire() as conn:
            if await definitions.get(conn, request.segment_id) is None:
                raise NotFound(f"no segment {request.segment_id!r}")
            subject = (await facts.resolve(conn, [request.subject_id]))[request.subject_id]
            held = (await memberships.of_subjects(conn, [subject]))[subject]
        member = held.get(request.segment_id)
        if member is None:
            return segment_pb2.IsMemberResponse(member=False)
        return segment_pb2.IsMemberResponse(member=True, membership=membership_message(member))

    async def ListSubjectSegments(
        self, request: Any, context: Any
    ) -> segment_pb2.ListSubjectSegmentsResponse:
        _subject(request.subject_id)
        check_text(request.purpose, "purpose", 64)
        async with self._pool.acquire() as conn:
            subject = (await facts.resolve(conn, [request.subject_id]))[request.subject_id]
            held = (await memberships.of_subjects(conn, [subject]))[subject]
            purposes = {s.segment_id: s.purpose for s in await definitions.live(conn)}
        chosen = [
            held[g]
            for g in sorted(held)
            if g in purposes and (not request.purpose or purposes[g] == request.purpose)
        ]
        return segment_pb2.ListSubjectSegmentsResponse(
            memberships=[membership_message(m) for m in chosen]
        )

    async def RunClustering(self, request: Any, context: Any) -> segment_pb2.RunClusteringResponse:
        purpose = request.purpose or "marketing"
        await check_purpose(self._consent, purpose)
        run = await self._discovery.start(
            k_min=request.k_min,
            k_max=request.k_max,
            seed=request.seed,
            features=list(request.features),
            purpose=purpose,
            on_demand=True,
        )
        return segment_pb2.RunClusteringResponse(run=run_message(run, with_clusters=False))

    async def GetClusterRun(self, request: Any, context: Any) -> segment_pb2.GetClusterRunResponse:
        check_text(request.run_id, "run_id", 100)
        async with self._pool.acquire() as conn:
            run = await discovery.get_run(conn, request.run_id)
        if run is None:
            raise NotFound(
                f"no discovery run {request.run_id!r}" if request.run_id else "no run yet"
            )
        return segment_pb2.GetClusterRunResponse(run=run_message(run, with_clusters=True))

    async def ListClusterRuns(
        self, request: Any, context: Any
    ) -> segment_pb2.ListClusterRunsResponse:
        limit = page_size(request.page, 20, 200)
        cursor = decode_cursor(request.page.page_token, {})
        before = None
        if cursor:
            try:
                before = (datetime.fromisoformat(str(cursor[0])), str(cursor[1]))
            except (ValueError, IndexError):
                raise InvalidArgument(
                    "bad page token",
                    [FieldViolation("page.page_token", "not a token issued here", "BAD_TOKEN")],
                ) from None
        async with self._pool.acquire() as conn:
            found = await discovery.list_runs(conn, before, limit + 1)
        shown = found[:limit]
        more = [shown[-1].started_at.isoformat(), shown[-1].run_id] if len(found) > limit else None
        return segment_pb2.ListClusterRunsResponse(
            runs=[run_message(r, with_clusters=False) for r in shown],
            page=common_pb2.PageInfo(next_page_token=encode_token(more, {})),
        )

    async def PromoteCluster(
        self, request: Any, context: Any
    ) -> segment_pb2.PromoteClusterResponse:
        check_text(request.run_id, "run_id", 100)
        async with self._pool.acquire() as conn:
            run = await discovery.get_run(conn, request.run_id) if request.run_id else None
        if run is None:
            raise NotFound(f"no discovery run {request.run_id!r}")
        if run.state != "COMPLETED":
            raise FailedPrecondition(f"run {run.run_id!r} has not completed ({run.state})")
        cluster = next((c for c in run.clusters if c["cluster_id"] == request.cluster_id), None)
        if cluster is None:
            raise NotFound(f"run {run.run_id!r} has no cluster {request.cluster_id}")
        rule = rules.to_proto(rules.ClusterAssignment(run.run_id, request.cluster_id))
        segment = await self._commands.create(
            segment_id=request.segment_id,
            name=request.name or cluster["label"] or f"cluster {request.cluster_id}",
            description=request.description or f"Discovered by {run.run_id}: {cluster['label']}",
            rule=RuleInput(proto=rule),
            purpose=request.purpose or run.purpose,
            created_by=current_principal().id,
            promoted_from=(run.run_id, request.cluster_id),
        )
        async with self._pool.acquire() as conn:
            await discovery.set_promoted(conn, run.run_id, request.cluster_id, segment.segment_id)
        return segment_pb2.PromoteClusterResponse(segment=segment_message(segment, 0))

    async def AuditSegments(self, request: Any, context: Any) -> segment_pb2.AuditSegmentsResponse:
        for index, segment_id in enumerate(request.segment_ids):
            check_text(segment_id, f"segment_ids[{index}]", 64)
        stale_after = request_duration(request, "stale_after", "stale_after") or timedelta(days=30)
        thresholds = AuditThresholds(
            tiny_segment_size=request.tiny_segment_size or 50,
            near_duplicate_jaccard=request.near_duplicate_jaccard or 0.9,
            representation_threshold=request.representation_threshold or 1.25,
            stale_after=stale_after,
        )
        report = await audit(
            self._pool,
            self._consent,
            list(request.segment_ids),
            list(request.attributes),
            thresholds,
            datetime.now(UTC),
        )
        response = segment_pb2.AuditSegmentsResponse()
        response.computed_at.CopyFrom(timestamp(report.computed_at))
        for item in report.segments:
            response.segments.add(
                segment_id=item.segment_id,
                size=item.size,
                population=item.population,
                stale_member_share=item.stale_member_share,
                median_data_age_seconds=item.median_data_age_seconds,
                composition=[
                    segment_pb2.Representation(
                        attribute=r.attribute,
                        value=r.value,
                        segment_share=r.segment_share,
                        population_share=r.population_share,
                        ratio=r.ratio,
                        flagged=r.flagged,
                    )
                    for r in item.composition
                ],
            )
        for pair in report.overlaps:
            response.overlaps.add(a=pair.a, b=pair.b, both=pair.both, jaccard=pair.jaccard)
        for warning in report.warnings:
            response.warnings.add(
                kind=int(warning.kind),
                segment_ids=list(warning.segment_ids),
                message=warning.message,
            )
        return response
