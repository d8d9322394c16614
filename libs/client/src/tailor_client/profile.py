"""Profiles: reads gated by consent for the purpose named, searches, trait history, merges,
rebuilds and batch jobs (``tailor.profile.v1.ProfileService``, ``127.0.0.1:50053`` by
default).

Reads need a token with ``profile:read``, operations ``profile:admin``. A read of a subject
without consent for its purpose raises :class:`~tailor_client.errors.ConsentRequired` (a
``PermissionDenied`` with reason ``CONSENT_REQUIRED``) unless ``non_personal_only`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict

from tailor.common.v1 import common_pb2
from tailor.profile.v1 import profile_pb2, profile_pb2_grpc
from tailor_client.service_client import AsyncServiceClient, SyncServiceClient, page

BatchJob: TypeAlias = profile_pb2.BatchJob.ValueType
Comparison: TypeAlias = common_pb2.Comparison.ValueType

_OPERATORS: dict[str, Comparison] = {
    "=": common_pb2.COMPARISON_EQ,
    "!=": common_pb2.COMPARISON_NE,
    ">": common_pb2.COMPARISON_GT,
    ">=": common_pb2.COMPARISON_GE,
    "<": common_pb2.COMPARISON_LT,
    "<=": common_pb2.COMPARISON_LE,
    "in": common_pb2.COMPARISON_IN,
    "not in": common_pb2.COMPARISON_NOT_IN,
    "contains": common_pb2.COMPARISON_CONTAINS,
    "starts_with": common_pb2.COMPARISON_STARTS_WITH,
    "exists": common_pb2.COMPARISON_EXISTS,
    "not exists": common_pb2.COMPARISON_NOT_EXISTS,
    "within_last": common_pb2.COMPARISON_WITHIN_LAST,
    "before_last": common_pb2.COMPARISON_BEFORE_LAST,
}


def condition(trait: str, op: str | Comparison, value: Any = None) -> profile_pb2.TraitCondition:
    """A FindProfiles condition: ``condition("computed.orders_lifetime", ">=", 10)``,
    ``condition("demographics.country", "in", ["GB", "IE"])``, ``condition("email",
    "exists")``, ``condition("computed.last_order_at", "within_last", timedelta(days=30))``.
    ``op`` is one of ``= != > >= < <= in, not in, contains, starts_with, exists, not exists,
    within_last, before_last`` or a ``common_pb2.Comparison``; ``value`` any JSON value, or a
    timedelta for the last two."""
    if isinstance(op, str):
        if op not in _OPERATORS:
            raise ValueError(f"unknown operator {op!r}: use one of {', '.join(_OPERATORS)}")
        op = _OPERATORS[op]
    found = profile_pb2.TraitCondition(trait=trait, op=op)
    if isinstance(value, timedelta):
        found.duration.FromTimedelta(value)
    elif value is not None:
        found.value.CopyFrom(ParseDict(value, struct_pb2.Value()))
    return found


class AsyncProfileClient(AsyncServiceClient):
    """The profile service from asyncio code."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(target, token, **options)
        self._stub = profile_pb2_grpc.ProfileServiceStub(self._channel)

    # --- reads (profile:read) -----------------------------------------------------------

    async def get_profile(
        self,
        subject_id: str,
        *,
        purpose: str,
        non_personal_only: bool = False,
        trait_names: Sequence[str] = (),
    ) -> profile_pb2.Profile:
        """One profile for ``purpose``; ``trait_names`` are exact names or prefixes ending in
        ``.`` (computed traits always come)."""
        reply: profile_pb2.GetProfileResponse = await self._call(
            self._stub.GetProfile,
            profile_pb2.GetProfileRequest(
                subject_id=subject_id,
                purpose=purpose,
                non_personal_only=non_personal_only,
                trait_names=trait_names,
            ),
        )
        return reply.profile

    async def batch_get_profiles(
        self,
        subject_ids: Sequence[str],
        *,
        purpose: str,
        non_personal_only: bool = False,
        trait_names: Sequence[str] = (),
    ) -> profile_pb2.BatchGetProfilesResponse:
        """Up to 100 profiles; ids without a profile or consent are listed, not raised."""
        reply: profile_pb2.BatchGetProfilesResponse = await self._call(
            self._stub.BatchGetProfiles,
            profile_pb2.BatchGetProfilesRequest(
                subject_ids=subject_ids,
                purpose=purpose,
                non_personal_only=non_personal_only,
                trait_names=trait_names,
            ),
        )
        return reply

    async def find_profiles(
        self,
        conditions: Sequence[profile_pb2.TraitCondition],
        *,
        purpose: str,
        order_by: str = "",
        trait_names: Sequence[str] = (),
        non_personal_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.FindProfilesResponse:
        """Profiles matching every condition (1..20, non-personal traits), among subjects
        with consent for ``purpose``; ``order_by`` is a trait, optionally + ``" desc"``."""
        reply: profile_pb2.FindProfilesResponse = await self._call(
            self._stub.FindProfiles,
            profile_pb2.FindProfilesRequest(
                conditions=conditions,
                purpose=purpose,
                order_by=order_by,
                trait_names=trait_names,
                non_personal_only=non_personal_only,
                page=page(page_size, page_token),
            ),
        )
        return reply

    async def get_trait_history(
        self,
        subject_id: str,
        *,
        purpose: str,
        trait: str,
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.GetTraitHistoryResponse:
        """The values ``trait`` had, newest first, including those that lost a conflict."""
        reply: profile_pb2.GetTraitHistoryResponse = await self._call(
            self._stub.GetTraitHistory,
            profile_pb2.GetTraitHistoryRequest(
                subject_id=subject_id,
                purpose=purpose,
                trait=trait,
                page=page(page_size, page_token),
            ),
        )
        return reply

    async def list_trait_definitions(self) -> list[profile_pb2.TraitDefinition]:
        """The trait catalogue, by name: what FindProfiles and segment rules may name."""
        reply: profile_pb2.ListTraitDefinitionsResponse = await self._call(
            self._stub.ListTraitDefinitions, profile_pb2.ListTraitDefinitionsRequest()
        )
        return list(reply.traits)

    # --- operations (profile:admin) -----------------------------------------------------

    async def get_merge_history(self, subject_id: str) -> profile_pb2.GetMergeHistoryResponse:
        """The merges the subject's profile took part in, oldest first."""
        reply: profile_pb2.GetMergeHistoryResponse = await self._call(
            self._stub.GetMergeHistory, profile_pb2.GetMergeHistoryRequest(subject_id=subject_id)
        )
        return reply

    async def merge_profiles(
        self, surviving_profile_id: str, merged_profile_ids: Sequence[str], *, note: str
    ) -> profile_pb2.MergeProfilesResponse:
        """Merge profiles by hand; ``note`` (1..500 characters, never personal data) says
        why. Idempotent for ids already merged."""
        reply: profile_pb2.MergeProfilesResponse = await self._call(
            self._stub.MergeProfiles,
            profile_pb2.MergeProfilesRequest(
                surviving_profile_id=surviving_profile_id,
                merged_profile_ids=merged_profile_ids,
                note=note,
            ),
        )
        return reply

    async def rebuild_profiles(self, *, reason: str = "") -> profile_pb2.Rebuild:
        """Start replaying EVENTS into fresh tables (reads go on); the rebuild started."""
        reply: profile_pb2.RebuildProfilesResponse = await self._call(
            self._stub.RebuildProfiles,
            profile_pb2.RebuildProfilesRequest(reason=reason),
            idempotent=False,
        )
        return reply.rebuild

    async def get_rebuild_status(self, rebuild_id: str = "") -> profile_pb2.Rebuild:
        """A rebuild's progress; empty ``rebuild_id`` = the current or latest one."""
        reply: profile_pb2.GetRebuildStatusResponse = await self._call(
            self._stub.GetRebuildStatus,
            profile_pb2.GetRebuildStatusRequest(rebuild_id=rebuild_id),
        )
        return reply.rebuild

    async def run_batch_job(self, job: BatchJob) -> profile_pb2.BatchJobRun:
        """Run a batch job now (e.g. ``profile_pb2.BATCH_JOB_RFM_SCORES``); the run started."""
        reply: profile_pb2.RunBatchJobResponse = await self._call(
            self._stub.RunBatchJob, profile_pb2.RunBatchJobRequest(job=job), idempotent=False
        )
        return reply.run

    async def list_batch_job_runs(
        self,
        *,
        job: BatchJob = profile_pb2.BATCH_JOB_UNSPECIFIED,
        run_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.ListBatchJobRunsResponse:
        """Recent runs, newest first, optionally of one job or one run."""
        reply: profile_pb2.ListBatchJobRunsResponse = await self._call(
            self._stub.ListBatchJobRuns,
            profile_pb2.ListBatchJobRunsRequest(
                job=job, run_id=run_id, page=page(page_size, page_token)
            ),
        )
        return reply


class ProfileClient(SyncServiceClient[AsyncProfileClient]):
    """The profile service from code without an event loop; the same methods as
    :class:`AsyncProfileClient`, blocking."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(lambda: AsyncProfileClient(target, token, **options))

    def get_profile(
        self,
        subject_id: str,
        *,
        purpose: str,
        non_personal_only: bool = False,
        trait_names: Sequence[str] = (),
    ) -> profile_pb2.Profile:
        return self._run(
            self._client.get_profile(
                subject_id,
                purpose=purpose,
                non_personal_only=non_personal_only,
                trait_names=trait_names,
            )
        )

    def batch_get_profiles(
        self,
        subject_ids: Sequence[str],
        *,
        purpose: str,
        non_personal_only: bool = False,
        trait_names: Sequence[str] = (),
    ) -> profile_pb2.BatchGetProfilesResponse:
        return self._run(
            self._client.batch_get_profiles(
                subject_ids,
                purpose=purpose,
                non_personal_only=non_personal_only,
                trait_names=trait_names,
            )
        )

    def find_profiles(
        self,
        conditions: Sequence[profile_pb2.TraitCondition],
        *,
        purpose: str,
        order_by: str = "",
        trait_names: Sequence[str] = (),
        non_personal_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.FindProfilesResponse:
        return self._run(
            self._client.find_profiles(
                conditions,
                purpose=purpose,
                order_by=order_by,
                trait_names=trait_names,
                non_personal_only=non_personal_only,
                page_size=page_size,
                page_token=page_token,
            )
        )

    def get_trait_history(
        self,
        subject_id: str,
        *,
        purpose: str,
        trait: str,
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.GetTraitHistoryResponse:
        return self._run(
            self._client.get_trait_history(
                subject_id, purpose=purpose, trait=trait, page_size=page_size, page_token=page_token
            )
        )

    def list_trait_definitions(self) -> list[profile_pb2.TraitDefinition]:
        return self._run(self._client.list_trait_definitions())

    def get_merge_history(self, subject_id: str) -> profile_pb2.GetMergeHistoryResponse:
        return self._run(self._client.get_merge_history(subject_id))

    def merge_profiles(
        self, surviving_profile_id: str, merged_profile_ids: Sequence[str], *, note: str
    ) -> profile_pb2.MergeProfilesResponse:
        return self._run(
            self._client.merge_profiles(surviving_profile_id, merged_profile_ids, note=note)
        )

    def rebuild_profiles(self, *, reason: str = "") -> profile_pb2.Rebuild:
        return self._run(self._client.rebuild_profiles(reason=reason))

    def get_rebuild_status(self, rebuild_id: str = "") -> profile_pb2.Rebuild:
        return self._run(self._client.get_rebuild_status(rebuild_id))

    def run_batch_job(self, job: BatchJob) -> profile_pb2.BatchJobRun:
        return self._run(self._client.run_batch_job(job))

    def list_batch_job_runs(
        self,
        *,
        job: BatchJob = profile_pb2.BATCH_JOB_UNSPECIFIED,
        run_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> profile_pb2.ListBatchJobRunsResponse:
        return self._run(
            self._client.list_batch_job_runs(
                job=job, run_id=run_id, page_size=page_size, page_token=page_token
            )
        )
