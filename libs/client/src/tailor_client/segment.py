"""Segments: definitions with rules, versions, previews, membership, discovered clusters and
audits (``tailor.segment.v1.SegmentService``, ``127.0.0.1:50054`` by default).

Reads need a token with ``segment:read``, changes ``segment:write``. Rules are given in their
text form (``'event "Product Viewed" count >= 1 within 24h'``) or as a
``segment_pb2.Rule``; a refused rule raises :class:`~tailor_client.errors.InvalidArgument`
whose violation ``rule.text`` has a description starting ``line:column:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from google.protobuf.duration_pb2 import Duration

from tailor.segment.v1 import rules_pb2, segment_pb2, segment_pb2_grpc
from tailor_client.service_client import AsyncServiceClient, SyncServiceClient, page

#: A rule: its text form, or the protobuf form.
RuleLike: TypeAlias = str | rules_pb2.Rule


def rule_input(rule: RuleLike) -> segment_pb2.RuleInput:
    """The request form of a rule given as text or as a Rule."""
    if isinstance(rule, str):
        return segment_pb2.RuleInput(text=rule)
    return segment_pb2.RuleInput(rule=rule)


class AsyncSegmentClient(AsyncServiceClient):
    """The segment service from asyncio code."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(target, token, **options)
        self._stub = segment_pb2_grpc.SegmentServiceStub(self._channel)

    # --- definitions ----------------------------------------------------------------------

    async def create_segment(
        self,
        segment_id: str,
        *,
        rule: RuleLike,
        name: str = "",
        description: str = "",
        purpose: str = "",
    ) -> segment_pb2.Segment:
        """Create a segment (version 1, state BACKFILLING until its membership is computed);
        ``name`` defaults to the id, ``purpose`` to ``"marketing"``."""
        reply: segment_pb2.CreateSegmentResponse = await self._call(
            self._stub.CreateSegment,
            segment_pb2.CreateSegmentRequest(
                segment_id=segment_id,
                name=name or segment_id,
                description=description,
                rule=rule_input(rule),
                purpose=purpose,
            ),
            idempotent=False,
        )
        return reply.segment

    async def update_segment(
        self,
        segment_id: str,
        *,
        expected_version: int = 0,
        rule: RuleLike | None = None,
        name: str = "",
        description: str | None = None,
        purpose: str = "",
    ) -> segment_pb2.Segment:
        """A new version with what is given changed; ``expected_version`` (0 = do not check)
        makes the update fail with ABORTED if someone changed it since."""
        request = segment_pb2.UpdateSegmentRequest(
            segment_id=segment_id,
            expected_version=expected_version,
            name=name,
            description=description,
            purpose=purpose,
        )
        if rule is not None:
            request.rule.CopyFrom(rule_input(rule))
        reply: segment_pb2.UpdateSegmentResponse = await self._call(
            self._stub.UpdateSegment, request, idempotent=expected_version != 0
        )
        return reply.segment

    async def delete_segment(self, segment_id: str) -> int:
        """Delete a segment; the number of members that exited."""
        reply: segment_pb2.DeleteSegmentResponse = await self._call(
            self._stub.DeleteSegment,
            segment_pb2.DeleteSegmentRequest(segment_id=segment_id),
            idempotent=False,
        )
        return reply.exited

    async def get_segment(self, segment_id: str, *, version: int = 0) -> segment_pb2.Segment:
        """A segment at its current version (0) or an earlier one."""
        reply: segment_pb2.GetSegmentResponse = await self._call(
            self._stub.GetSegment,
            segment_pb2.GetSegmentRequest(segment_id=segment_id, version=version),
        )
        return reply.segment

    async def list_segments(
        self,
        *,
        purpose: str = "",
        include_deleted: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> segment_pb2.ListSegmentsResponse:
        """Segments by id (50 a page by default, at most 500)."""
        reply: segment_pb2.ListSegmentsResponse = await self._call(
            self._stub.ListSegments,
            segment_pb2.ListSegmentsRequest(
                purpose=purpose, include_deleted=include_deleted, page=page(page_size, page_token)
            ),
        )
        return reply

    async def list_segment_versions(
        self, segment_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListSegmentVersionsResponse:
        """Every version of a segment, newest first."""
        reply: segment_pb2.ListSegmentVersionsResponse = await self._call(
            self._stub.ListSegmentVersions,
            segment_pb2.ListSegmentVersionsRequest(
                segment_id=segment_id, page=page(page_size, page_token)
            ),
        )
        return reply

    # --- rules ----------------------------------------------------------------------------

    async def validate_rule(self, rule: RuleLike) -> segment_pb2.ValidateRuleResponse:
        """Parse and check a rule: ``valid`` with its canonical forms, or its ``problems``
        (problems are the answer here, not an exception)."""
        reply: segment_pb2.ValidateRuleResponse = await self._call(
            self._stub.ValidateRule, segment_pb2.ValidateRuleRequest(rule=rule_input(rule))
        )
        return reply

    async def preview_segment(
        self, rule: RuleLike, *, purpose: str = "", sample_size: int = 0
    ) -> segment_pb2.PreviewSegmentResponse:
        """Size and a sample (0..100 ids) of a rule on current data, without saving it."""
        reply: segment_pb2.PreviewSegmentResponse = await self._call(
            self._stub.PreviewSegment,
            segment_pb2.PreviewSegmentRequest(
                rule=rule_input(rule), purpose=purpose, sample_size=sample_size
            ),
        )
        return reply

    # --- membership -----------------------------------------------------------------------

    async def list_members(
        self, segment_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListMembersResponse:
        """Current members by entry time (100 a page by default, at most 1000)."""
        reply: segment_pb2.ListMembersResponse = await self._call(
            self._stub.ListMembers,
            segment_pb2.ListMembersRequest(segment_id=segment_id, page=page(page_size, page_token)),
        )
        return reply

    async def is_member(self, segment_id: str, subject_id: str) -> segment_pb2.IsMemberResponse:
        """Whether the subject (any of its ids) is a member now, with the membership."""
        reply: segment_pb2.IsMemberResponse = await self._call(
            self._stub.IsMember,
            segment_pb2.IsMemberRequest(segment_id=segment_id, subject_id=subject_id),
        )
        return reply

    async def list_subject_segments(
        self, subject_id: str, *, purpose: str = ""
    ) -> list[segment_pb2.Membership]:
        """The subject's memberships now, by segment id."""
        reply: segment_pb2.ListSubjectSegmentsResponse = await self._call(
            self._stub.ListSubjectSegments,
            segment_pb2.ListSubjectSegmentsRequest(subject_id=subject_id, purpose=purpose),
        )
        return list(reply.memberships)

    # --- discovery ------------------------------------------------------------------------

    async def run_clustering(
        self,
        *,
        k_min: int = 0,
        k_max: int = 0,
        seed: int = 0,
        features: Sequence[str] = (),
        purpose: str = "",
    ) -> segment_pb2.ClusterRun:
        """Start a K-Means discovery run now (k in 2..10 by default); the run, RUNNING."""
        reply: segment_pb2.RunClusteringResponse = await self._call(
            self._stub.RunClustering,
            segment_pb2.RunClusteringRequest(
                k_min=k_min, k_max=k_max, seed=seed, features=features, purpose=purpose
            ),
            idempotent=False,
        )
        return reply.run

    async def get_cluster_run(self, run_id: str = "") -> segment_pb2.ClusterRun:
        """A discovery run with its clusters; empty ``run_id`` = the latest completed."""
        reply: segment_pb2.GetClusterRunResponse = await self._call(
            self._stub.GetClusterRun, segment_pb2.GetClusterRunRequest(run_id=run_id)
        )
        return reply.run

    async def list_cluster_runs(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListClusterRunsResponse:
        """Discovery runs, newest first, without their clusters."""
        reply: segment_pb2.ListClusterRunsResponse = await self._call(
            self._stub.ListClusterRuns,
            segment_pb2.ListClusterRunsRequest(page=page(page_size, page_token)),
        )
        return reply

    async def promote_cluster(
        self,
        run_id: str,
        cluster_id: int,
        *,
        segment_id: str,
        name: str = "",
        description: str = "",
        purpose: str = "",
    ) -> segment_pb2.Segment:
        """Turn a discovered cluster into a named segment (version 1)."""
        reply: segment_pb2.PromoteClusterResponse = await self._call(
            self._stub.PromoteCluster,
            segment_pb2.PromoteClusterRequest(
                run_id=run_id,
                cluster_id=cluster_id,
                segment_id=segment_id,
                name=name,
                description=description,
                purpose=purpose,
            ),
            idempotent=False,
        )
        return reply.segment

    # --- audits ---------------------------------------------------------------------------

    async def audit_segments(
        self,
        segment_ids: Sequence[str] = (),
        *,
        attributes: Sequence[str] = (),
        representation_threshold: float = 0.0,
        tiny_segment_size: int = 0,
        near_duplicate_jaccard: float = 0.0,
        stale_after: timedelta | None = None,
    ) -> segment_pb2.AuditSegmentsResponse:
        """Sizes, overlaps, warnings, composition against the population and freshness of
        ``segment_ids`` (empty = every active segment); zeros mean the service's defaults."""
        request = segment_pb2.AuditSegmentsRequest(
            segment_ids=segment_ids,
            attributes=attributes,
            representation_threshold=representation_threshold,
            tiny_segment_size=tiny_segment_size,
            near_duplicate_jaccard=near_duplicate_jaccard,
        )
        if stale_after is not None:
            duration = Duration()
            duration.FromTimedelta(stale_after)
            request.stale_after.CopyFrom(duration)
        reply: segment_pb2.AuditSegmentsResponse = await self._call(
            self._stub.AuditSegments, request
        )
        return reply


class SegmentClient(SyncServiceClient[AsyncSegmentClient]):
    """The segment service from code without an event loop; the same methods as
    :class:`AsyncSegmentClient`, blocking."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(lambda: AsyncSegmentClient(target, token, **options))

    def create_segment(
        self,
        segment_id: str,
        *,
        rule: RuleLike,
        name: str = "",
        description: str = "",
        purpose: str = "",
    ) -> segment_pb2.Segment:
        return self._run(
            self._client.create_segment(
                segment_id, rule=rule, name=name, description=description, purpose=purpose
            )
        )

    def update_segment(
        self,
        segment_id: str,
        *,
        expected_version: int = 0,
        rule: RuleLike | None = None,
        name: str = "",
        description: str | None = None,
        purpose: str = "",
    ) -> segment_pb2.Segment:
        return self._run(
            self._client.update_segment(
                segment_id,
                expected_version=expected_version,
                rule=rule,
                name=name,
                description=description,
                purpose=purpose,
            )
        )

    def delete_segment(self, segment_id: str) -> int:
        return self._run(self._client.delete_segment(segment_id))

    def get_segment(self, segment_id: str, *, version: int = 0) -> segment_pb2.Segment:
        return self._run(self._client.get_segment(segment_id, version=version))

    def list_segments(
        self,
        *,
        purpose: str = "",
        include_deleted: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> segment_pb2.ListSegmentsResponse:
        return self._run(
            self._client.list_segments(
                purpose=purpose,
                include_deleted=include_deleted,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def list_segment_versions(
        self, segment_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListSegmentVersionsResponse:
        return self._run(
            self._client.list_segment_versions(
                segment_id, page_size=page_size, page_token=page_token
            )
        )

    def validate_rule(self, rule: RuleLike) -> segment_pb2.ValidateRuleResponse:
        return self._run(self._client.validate_rule(rule))

    def preview_segment(
        self, rule: RuleLike, *, purpose: str = "", sample_size: int = 0
    ) -> segment_pb2.PreviewSegmentResponse:
        return self._run(
            self._client.preview_segment(rule, purpose=purpose, sample_size=sample_size)
        )

    def list_members(
        self, segment_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListMembersResponse:
        return self._run(
            self._client.list_members(segment_id, page_size=page_size, page_token=page_token)
        )

    def is_member(self, segment_id: str, subject_id: str) -> segment_pb2.IsMemberResponse:
        return self._run(self._client.is_member(segment_id, subject_id))

    def list_subject_segments(
        self, subject_id: str, *, purpose: str = ""
    ) -> list[segment_pb2.Membership]:
        return self._run(self._client.list_subject_segments(subject_id, purpose=purpose))

    def run_clustering(
        self,
        *,
        k_min: int = 0,
        k_max: int = 0,
        seed: int = 0,
        features: Sequence[str] = (),
        purpose: str = "",
    ) -> segment_pb2.ClusterRun:
        return self._run(
            self._client.run_clustering(
                k_min=k_min, k_max=k_max, seed=seed, features=features, purpose=purpose
            )
        )

    def get_cluster_run(self, run_id: str = "") -> segment_pb2.ClusterRun:
        return self._run(self._client.get_cluster_run(run_id))

    def list_cluster_runs(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> segment_pb2.ListClusterRunsResponse:
        return self._run(self._client.list_cluster_runs(page_size=page_size, page_token=page_token))

    def promote_cluster(
        self,
        run_id: str,
        cluster_id: int,
        *,
        segment_id: str,
        name: str = "",
        description: str = "",
        purpose: str = "",
    ) -> segment_pb2.Segment:
        return self._run(
            self._client.promote_cluster(
                run_id,
                cluster_id,
                segment_id=segment_id,
                name=name,
                description=description,
                purpose=purpose,
            )
        )

    def audit_segments(
        self,
        segment_ids: Sequence[str] = (),
        *,
        attributes: Sequence[str] = (),
        representation_threshold: float = 0.0,
        tiny_segment_size: int = 0,
        near_duplicate_jaccard: float = 0.0,
        stale_after: timedelta | None = None,
    ) -> segment_pb2.AuditSegmentsResponse:
        return self._run(
            self._client.audit_segments(
                segment_ids,
                attributes=attributes,
                representation_threshold=representation_threshold,
                tiny_segment_size=tiny_segment_size,
                near_duplicate_jaccard=near_duplicate_jaccard,
                stale_after=stale_after,
            )
        )
