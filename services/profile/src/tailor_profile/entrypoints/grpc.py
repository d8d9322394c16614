"""The gRPC adapter of the profile service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf import json_format, struct_pb2

from tailor.common.v1 import common_pb2
from tailor.profile.v1 import profile_pb2, profile_pb2_grpc
from tailor_core.envelopes import timestamp
from tailor_core.errors import FieldViolation, InvalidArgument, NotFound
from tailor_core.interceptors import current_principal
from tailor_core.paging import decode_cursor, encode_token, page_size
from tailor_core.wire import check_text, request_duration
from tailor_profile.adapters import repository as repo
from tailor_profile.adapters import search
from tailor_profile.domain import conditions
from tailor_profile.domain.catalogue import CATALOGUE, definition_of
from tailor_profile.jobs import BatchJobs, Job, JobRun, run_from_row
from tailor_profile.projection import ProfileProjection
from tailor_profile.reads import (
    ProfileReader,
    ProfileRecord,
    check_purpose,
    check_trait_names,
    consent_denied,
    judge,
)
from tailor_profile.rebuild import Rebuild, Rebuilder

MAX_BATCH_GET = 100
MAX_ID_LENGTH = 256


def _check_subject(subject_id: str, field: str = "subject_id") -> None:
    if not subject_id:
        raise InvalidArgument(
            f"{field} is required", [FieldViolation(field, "give a subject id", "REQUIRED")]
        )
    check_text(subject_id, field, MAX_ID_LENGTH)


def _value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    json_format.ParseDict(value, message)
    return message


def profile_message(record: ProfileRecord) -> profile_pb2.Profile:
    message = profile_pb2.Profile(
        profile_id=record.profile_id,
        identities=record.identities,
        version=record.version,
        personal_omitted=record.personal_omitted,
    )
    if record.first_seen:
        message.first_seen.CopyFrom(timestamp(record.first_seen))
    if record.last_seen:
        message.last_seen.CopyFrom(timestamp(record.last_seen))
    for trait in record.traits:
        item = message.traits.add(
            name=trait.name,
            source=trait.source,
            stale=trait.stale,
            imputed=trait.imputed,
            personal=trait.personal,
            source_id=trait.source_id,
            cause_event_id=trait.cause_event_id,
        )
        item.value.CopyFrom(_value(trait.value))
        item.updated_at.CopyFrom(timestamp(trait.updated_at))
    json_format.ParseDict(record.computed, message.computed, ignore_unknown_fields=True)
    return message


def _rebuild_message(rebuild: Rebuild) -> profile_pb2.Rebuild:
    message = profile_pb2.Rebuild(
        rebuild_id=rebuild.rebuild_id,
        state=profile_pb2.RebuildState.Value(f"REBUILD_STATE_{rebuild.state}"),
        replayed=rebuild.replayed,
        target=rebuild.target,
        error=rebuild.error,
        requested_by=rebuild.requested_by,
    )
    message.started_at.CopyFrom(timestamp(rebuild.started_at))
    if rebuild.finished_at:
        message.finished_at.CopyFrom(timestamp(rebuild.finished_at))
    return message


def _run_message(run: JobRun) -> profile_pb2.BatchJobRun:
    message = profile_pb2.BatchJobRun(
        run_id=run.run_id,
        job=profile_pb2.BatchJob.Value(f"BATCH_JOB_{run.job.value}"),
        state=profile_pb2.JobState.Value(f"JOB_STATE_{run.state}"),
        profiles_updated=run.profiles_updated,
        on_demand=run.on_demand,
        error=run.error,
    )
    message.started_at.CopyFrom(timestamp(run.started_at))
    if run.finished_at:
        message.finished_at.CopyFrom(timestamp(run.finished_at))
    return message


_REASONS = {"identify": 1, "alias": 2, "manual": 3}


def _merge_message(row: Any) -> profile_pb2.MergeRecord:
    message = profile_pb2.MergeRecord(
        surviving_profile_id=row["surviving_profile_id"],
        merged_profile_id=row["merged_profile_id"],
        reason=_REASONS.get(row["reason"], 0),  # type: ignore[arg-type]
        cause_event_id=row["cause_event_id"],
        merged_by=row["merged_by"],
        note=row["note"],
    )
    message.merged_at.CopyFrom(timestamp(row["merged_at"]))
    return message


def _comparison_name(op: int) -> str:
    """The operator's name without its prefix; "" for a number the enum does not define
    (which parse_condition refuses as a missing operator)."""
    if op not in common_pb2.Comparison.values():
        return ""
    name = common_pb2.Comparison.Name(common_pb2.Comparison.ValueType(op))
    return name.removeprefix("COMPARISON_")


def _operand(condition: profile_pb2.TraitCondition, index: int) -> Any:
    """The condition's value as plain JSON data, None when unset; INVALID_ARGUMENT for a
    value JSON cannot hold (NaN, infinities)."""
    if not condition.HasField("value"):
        return None
    try:
        return json_format.MessageToDict(condition.value)
    except (ValueError, json_format.SerializeToJsonError):
        path = f"conditions[{index}].value"
        raise InvalidArgument(
            f"{path} is not a JSON value",
            [FieldViolation(path, "a finite number, string, bool, list or struct", "NOT_JSON")],
        ) from None


class ProfileServicer(profile_pb2_grpc.ProfileServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        reader: ProfileReader,
        projection: ProfileProjection,
        jobs: BatchJobs,
        rebuilder: Rebuilder,
    ) -> None:
        self._pool = pool
        self._reader = reader
        self._projection = projection
        self._jobs = jobs
        self._rebuilder = rebuilder

    async def GetProfile(self, request: Any, context: Any) -> profile_pb2.GetProfileResponse:
        _check_subject(request.subject_id)
        record = await self._reader.get(
            request.subject_id,
            request.purpose,
            non_personal_only=request.non_personal_only,
            trait_names=list(request.trait_names),
        )
        return profile_pb2.GetProfileResponse(profile=profile_message(record))

    async def BatchGetProfiles(
        self, request: Any, context: Any
    ) -> profile_pb2.BatchGetProfilesResponse:
        ids = list(request.subject_ids)
        if not 1 <= len(ids) <= MAX_BATCH_GET:
            raise InvalidArgument(
                f"give 1..{MAX_BATCH_GET} subject ids, not {len(ids)}",
                [FieldViolation("subject_ids", f"1..{MAX_BATCH_GET} ids", "COUNT")],
            )
        for index, subject_id in enumerate(ids):
            _check_subject(subject_id, f"subject_ids[{index}]")
        check_purpose(request.purpose)
        check_trait_names(request.trait_names)
        result = await self._reader.get_many(
            ids,
            request.purpose,
            non_personal_only=request.non_personal_only,
            trait_names=list(request.trait_names),
        )
        return profile_pb2.BatchGetProfilesResponse(
            profiles=[profile_message(r) for r in result.profiles],
            missing_subject_ids=result.missing,
            denied_subject_ids=result.denied,
        )

    async def FindProfiles(self, request: Any, context: Any) -> profile_pb2.FindProfilesResponse:
        conditions.check_count(len(request.conditions))
        parsed = [
            conditions.parse_condition(
                index,
                c.trait,
                _comparison_name(c.op),
                _operand(c, index),
                request_duration(c, "duration", f"conditions[{index}].duration")
                if c.HasField("duration")
                else None,
            )
            for index, c in enumerate(request.conditions)
        ]
        check_purpose(request.purpose)
        check_trait_names(request.trait_names)
        order = conditions.parse_order_by(request.order_by)
        limit = page_size(request.page, 50, 500)
        filters = [json_format.MessageToDict(c) for c in request.conditions] + [
            request.purpose,
            request.order_by,
        ]
        cursor = decode_cursor(request.page.page_token, filters)
        found: list[ProfileRecord] = []
        # Subjects without consent are left out, so a page may need several queries.
        for _ in range(5):
            async with self._pool.acquire() as conn:
                profiles, cursor = await search.find(
                    conn, parsed, order=order, cursor=cursor, limit=limit - len(found)
                )
            answers = await self._reader._consent.check_many(
                (p.profile_id, request.purpose) for p in profiles
            )
            for profile in profiles:
                if judge(answers[(profile.profile_id, request.purpose)], request.purpose):
                    found.append(
                        self._reader.record(profile, list(request.trait_names), personal=False)
                    )
            if cursor is None or len(found) >= limit:
                break
        return profile_pb2.FindProfilesResponse(
            profiles=[profile_message(r) for r in found],
            page=common_pb2.PageInfo(next_page_token=encode_token(cursor, filters)),
        )

    async def GetTraitHistory(
        self, request: Any, context: Any
    ) -> profile_pb2.GetTraitHistoryResponse:
        _check_subject(request.subject_id)
        check_purpose(request.purpose)
        definition = definition_of(request.trait) if request.trait else None
        if definition is None or definition.source.name == "COMPUTED":
            raise InvalidArgument(
                f"no history for trait {request.trait!r}",
                [FieldViolation("trait", "an explicit or context trait", "UNKNOWN_TRAIT")],
            )
        resolved = await self._reader.resolve([request.subject_id])
        if request.subject_id not in resolved:
            raise NotFound("no profile for this subject id")
        profile_id = resolved[request.subject_id]
        answer = await self._reader._consent.check(profile_id, request.purpose)
        if not judge(answer, request.purpose):
            raise consent_denied(request.purpose)
        limit = page_size(request.page, 100, 1000)
        filters = [request.subject_id, request.trait]
        cursor = decode_cursor(request.page.page_token, filters)
        after = (datetime.fromisoformat(cursor[0]), int(cursor[1])) if cursor else None
        async with self._pool.acquire() as conn:
            rows = await repo.history(conn, profile_id, request.trait, after, limit + 1)
            current = await repo.get_profiles(conn, [profile_id])
        state_entry = current[profile_id].state["traits"].get(request.trait) if current else None
        entries = []
        for row in rows[:limit]:
            value: Any = json.loads(row["value"]) if row["value"] is not None else None
            if row["sealed"]:
                value = await self._reader.open_value(
                    row["sealed"], row["key_subject"], request.purpose
                )
            is_current = state_entry is not None and state_entry["ev"] == row["cause_event_id"]
            status = 1 if is_current else (3 if row["lost"] else 2)
            entry = profile_pb2.TraitHistoryEntry(
                source=row["source"],
                status=status,  # type: ignore[arg-type]
                source_id=row["source_id"],
                cause_event_id=row["cause_event_id"],
            )
            entry.value.CopyFrom(_value(value))
            entry.set_at.CopyFrom(timestamp(row["set_at"]))
            entries.append(entry)
        next_cursor = (
            [rows[limit - 1]["set_at"].isoformat(), rows[limit - 1]["entry_id"]]
            if len(rows) > limit
            else None
        )
        return profile_pb2.GetTraitHistoryResponse(
            entries=entries,
            page=common_pb2.PageInfo(next_page_token=encode_token(next_cursor, filters)),
        )

    async def ListTraitDefinitions(
        self, request: Any, context: Any
    ) -> profile_pb2.ListTraitDefinitionsResponse:
        definitions = []
        for d in sorted(CATALOGUE, key=lambda d: d.name):
            message = profile_pb2.TraitDefinition(
                name=d.name,
                type=int(d.type),  # type: ignore[arg-type]
                personal=d.personal,
                source=int(d.source),  # type: ignore[arg-type]
                imputable=d.imputable,
                description=d.description,
            )
            if d.stale_after:
                message.stale_after.FromTimedelta(d.stale_after)
            definitions.append(message)
        return profile_pb2.ListTraitDefinitionsResponse(traits=definitions)

    async def GetMergeHistory(
        self, request: Any, context: Any
    ) -> profile_pb2.GetMergeHistoryResponse:
        _check_subject(request.subject_id)
        resolved = await self._reader.resolve([request.subject_id])
        if request.subject_id not in resolved:
            raise NotFound("no profile for this subject id")
        profile_id = resolved[request.subject_id]
        async with self._pool.acquire() as conn:
            ids = await repo.identities_of(conn, profile_id)
            rows = await repo.merges_of(conn, ids or [profile_id])
        return profile_pb2.GetMergeHistoryResponse(
            profile_id=profile_id, merges=[_merge_message(r) for r in rows]
        )

    async def MergeProfiles(self, request: Any, context: Any) -> profile_pb2.MergeProfilesResponse:
        _check_subject(request.surviving_profile_id, "surviving_profile_id")
        merged = list(dict.fromkeys(request.merged_profile_ids))
        for index, subject_id in enumerate(merged):
            _check_subject(subject_id, f"merged_profile_ids[{index}]")
        if not merged or request.surviving_profile_id in merged:
            raise InvalidArgument(
                "name at least one profile to merge, other than the survivor",
                [FieldViolation("merged_profile_ids", "ids other than the survivor", "REQUIRED")],
            )
        if not 1 <= len(request.note) <= 500:
            raise InvalidArgument(
                "a note (1..500 characters) is required",
                [FieldViolation("note", "say why, 1..500 characters", "REQUIRED")],
            )
        check_text(request.note, "note", 500)
        ids = [request.surviving_profile_id, *merged]
        resolved = await self._reader.resolve(ids)
        missing = [i for i in ids if i not in resolved]
        if missing:
            raise NotFound(f"{len(missing)} of the ids have no profile")
        principal = current_principal()
        async with self._pool.acquire() as conn, conn.transaction():
            survivor, recorded = await self._projection.merge_by_hand(
                conn,
                request.surviving_profile_id,
                merged,
                merged_by=principal.id,
                note=request.note,
            )
        merges = []
        for item in recorded:
            message = profile_pb2.MergeRecord(
                surviving_profile_id=item["surviving"],
                merged_profile_id=item["merged"],
                reason=profile_pb2.MERGE_REASON_MANUAL,
                merged_by=principal.id,
                note=request.note,
            )
            message.merged_at.CopyFrom(timestamp(item["merged_at"]))
            merges.append(message)
        return profile_pb2.MergeProfilesResponse(
            profile_id=survivor.profile_id, version=survivor.version, merges=merges
        )

    async def RebuildProfiles(
        self, request: Any, context: Any
    ) -> profile_pb2.RebuildProfilesResponse:
        check_text(request.reason, "reason", 500)
        rebuild = await self._rebuilder.start(current_principal().id, request.reason)
        return profile_pb2.RebuildProfilesResponse(rebuild=_rebuild_message(rebuild))

    async def GetRebuildStatus(
        self, request: Any, context: Any
    ) -> profile_pb2.GetRebuildStatusResponse:
        check_text(request.rebuild_id, "rebuild_id", 100)
        rebuild = await self._rebuilder.status(request.rebuild_id)
        return profile_pb2.GetRebuildStatusResponse(rebuild=_rebuild_message(rebuild))

    async def RunBatchJob(self, request: Any, context: Any) -> profile_pb2.RunBatchJobResponse:
        job = _job(request.job)
        if job is None:
            raise InvalidArgument(
                "name a job", [FieldViolation("job", "a BatchJob value", "REQUIRED")]
            )
        run = await self._jobs.start(job, on_demand=True)
        return profile_pb2.RunBatchJobResponse(run=_run_message(run))

    async def ListBatchJobRuns(
        self, request: Any, context: Any
    ) -> profile_pb2.ListBatchJobRunsResponse:
        check_text(request.run_id, "run_id", 100)
        limit = page_size(request.page, 20, 200)
        job = _job(request.job)
        filters = [job.value if job else "", request.run_id]
        cursor = decode_cursor(request.page.page_token, filters)
        offset = int(cursor[0]) if cursor else 0
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM job_runs WHERE ($1 = '' OR job = $1) AND ($2 = '' OR run_id = $2) "
                "ORDER BY started_at DESC, run_id LIMIT $3 OFFSET $4",
                filters[0],
                request.run_id,
                limit + 1,
                offset,
            )
        if request.run_id and not rows:
            raise NotFound("no such run")
        runs = [_run_message(run_from_row(r)) for r in rows[:limit]]
        next_cursor = [offset + limit] if len(rows) > limit else None
        return profile_pb2.ListBatchJobRunsResponse(
            runs=runs, page=common_pb2.PageInfo(next_page_token=encode_token(next_cursor, filters))
        )


def _job(value: int) -> Job | None:
    if value == 0:
        return None
    try:
        return Job(profile_pb2.BatchJob.Name(value).removeprefix("BATCH_JOB_"))  # type: ignore[arg-type]
    except ValueError:
        return None
