"""Segment audits on current data: sizes, overlaps, warnings, composition against each
segment's population (subjects with consent for its purpose) and members' freshness."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from tailor_core.consent_client import ConsentClient
from tailor_core.errors import FieldViolation, NotFound
from tailor_segment.adapters import definitions, facts, memberships
from tailor_segment.domain.audits import (
    AuditReport,
    AuditThresholds,
    audit_segments,
    validate_attributes,
)

PAGE = 2000


async def audit(
    pool: asyncpg.Pool,
    consent: ConsentClient,
    segment_ids: Sequence[str],
    attributes: Sequence[str],
    thresholds: AuditThresholds,
    now: datetime,
) -> AuditReport:
    chosen_attributes = validate_attributes(attributes)
    async with pool.acquire() as conn:
        live = {s.segment_id: s for s in await definitions.live(conn)}
        unknown = [
            FieldViolation(f"segment_ids[{i}]", "not an active segment", "UNKNOWN_SEGMENT")
            for i, g in enumerate(segment_ids)
            if g not in live
        ]
        if unknown:
            raise NotFound("unknown segments", unknown)
        chosen = list(segment_ids) or sorted(live)
        members = await memberships.member_sets(conn, chosen)
        population: dict[str, dict[str, Any]] = {}
        after: str | None = None
        while page := await facts.traits_page(conn, after, PAGE):
            after = page[-1][0]
            for subject, traits, last_seen in page:
                if last_seen is not None:
                    traits.setdefault("last_seen", last_seen.isoformat())
                population[subject] = traits
    purposes = {live[g].purpose for g in chosen}
    answers = await consent.check_many((s, p) for s in population for p in purposes)
    by_purpose = {p: {s for s in population if answers[(s, p)].allowed} for p in sorted(purposes)}
    return audit_segments(
        members,
        population,
        now=now,
        attributes=chosen_attributes,
        thresholds=thresholds,
        populations={g: by_purpose[live[g].purpose] for g in chosen},
    )
