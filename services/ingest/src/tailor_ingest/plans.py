"""Tracking plans: stored as versions, read by every call through a one-second cache."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg

from tailor.ingest.v1 import admin_pb2
from tailor_core.envelopes import timestamp
from tailor_core.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from tailor_ingest.adapters import repository
from tailor_ingest.domain.api_keys import SOURCE_ID
from tailor_ingest.domain.plan import TrackingPlan
from tailor_ingest.entrypoints.convert import plan_from_proto

#: How long a replica may use a plan after another replica replaced it.
PLAN_CACHE_SECONDS = 1.0


def _stored_proto(stored: repository.StoredPlan) -> admin_pb2.TrackingPlan:
    plan = admin_pb2.TrackingPlan.FromString(stored.plan)
    plan.version = stored.version
    plan.updated_at.CopyFrom(timestamp(stored.updated_at))
    plan.updated_by = stored.updated_by
    return plan


def check_source_id(source_id: str, field: str) -> None:
    if not SOURCE_ID.fullmatch(source_id):
        raise InvalidArgument(
            "malformed source id",
            [FieldViolation(field, "1..64 of a-z, 0-9, '-' and '_'", "SOURCE_ID_MALFORMED")],
        )


class PlanBook:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[TrackingPlan | None, float]] = {}

    async def current(self, source_id: str) -> TrackingPlan | None:
        """The plan that applies to a source's events now (None: built-in rules only)."""
        cached = self._cache.get(source_id)
        if cached is not None and time.monotonic() - cached[1] < PLAN_CACHE_SECONDS:
            return cached[0]
        async with self._pool.acquire() as conn:
            stored = await repository.latest_plan(conn, source_id)
        plan = None
        if stored is not None and not stored.deleted:
            plan = plan_from_proto(_stored_proto(stored))
        self._cache[source_id] = (plan, time.monotonic())
        return plan

    async def put(
        self, proposed: admin_pb2.TrackingPlan, expected_version: int, staff: str
    ) -> admin_pb2.TrackingPlan:
        check_source_id(proposed.source_id, "plan.source_id")
        plan_from_proto(proposed)  # raises InvalidArgument naming each bad rule
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            await repository.lock_source_plans(conn, proposed.source_id)
            latest = await repository.latest_plan(conn, proposed.source_id)
            current = latest.version if latest and not latest.deleted else 0
            if expected_version and expected_version != current:
                raise Aborted(
                    f"the current plan version is {current}, not {expected_version}; "
                    "read it again and retry"
                )
            version = (latest.version if latest else 0) + 1
            stored = admin_pb2.TrackingPlan()
            stored.CopyFrom(proposed)
            for name in ("version", "updated_at", "updated_by"):
                stored.ClearField(name)
            await repository.insert_plan(
                conn, proposed.source_id, version, stored.SerializeToString(), staff, now
            )
            saved = await repository.plan_version(conn, proposed.source_id, version)
        self._cache.pop(proposed.source_id, None)
        assert saved is not None
        return _stored_proto(saved)

    async def get(self, source_id: str, version: int) -> admin_pb2.TrackingPlan:
        check_source_id(source_id, "source_id")
        async with self._pool.acquire() as conn:
            if version:
                stored = await repository.plan_version(conn, source_id, version)
            else:
                stored = await repository.latest_plan(conn, source_id)
                stored = stored if stored and not stored.deleted else None
        if stored is None:
            raise NotFound(f"source {source_id} has no such plan")
        return _stored_proto(stored)

    async def list_current(
        self, after_source: str, limit: int
    ) -> tuple[list[admin_pb2.TrackingPlan], str]:
        async with self._pool.acquire() as conn:
            stored = await repository.current_plans(conn, after_source, limit + 1)
        more = len(stored) > limit
        page = stored[:limit]
        return [_stored_proto(s) for s in page], (page[-1].source_id if more else "")

    async def delete(self, source_id: str) -> int:
        check_source_id(source_id, "source_id")
        async with self._pool.acquire() as conn, conn.transaction():
            await repository.lock_source_plans(conn, source_id)
            latest = await repository.latest_plan(conn, source_id)
            if latest is None or latest.deleted:
                raise NotFound(f"source {source_id} has no plan")
            await repository.mark_plan_deleted(conn, source_id, latest.version, datetime.now(UTC))
        self._cache.pop(source_id, None)
        return latest.version
