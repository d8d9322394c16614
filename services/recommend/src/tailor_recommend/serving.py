"""Serving: the consent gate, what is read about the subject, and the calls into the
recommender (tailor_recommend.domain.blending) with the request's rules and context.

Without the subject's current ``personalization`` consent nothing stored about it is read:
the answer comes from popularity and the request's own items, and says why."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

import asyncpg

from tailor_core.consent_client import ConsentClient
from tailor_core.errors import NotFound
from tailor_recommend.adapters import store
from tailor_recommend.domain.blending import Answer, Strategy, Subject
from tailor_recommend.domain.interactions import InteractionWeights
from tailor_recommend.domain.popularity import GLOBAL, context_groups, segment_group
from tailor_recommend.domain.reranking import (
    Candidate,
    Context,
    Filters,
    Reason,
    ReasonKind,
    Rules,
    Source,
    apply_rules,
)
from tailor_recommend.live import LiveModels

PURPOSE = "personalization"
HISTORY = 200


class NotPersonalized(Enum):
    NO = "no"
    NO_CONSENT = "no_consent"
    CONSENT_UNAVAILABLE = "consent_unavailable"
    COLD_SUBJECT = "cold_subject"


@dataclass(frozen=True, slots=True)
class Served:
    items: list[Candidate]
    personalized: bool
    why_not: NotPersonalized
    versions: list[tuple[Source, str]]
    recommendation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    item_known: bool = True


@dataclass(frozen=True, slots=True)
class Known:
    """What may be used about the subject."""

    allowed: bool
    why_not: NotPersonalized
    subject_id: str = ""
    history: dict[str, float] = field(default_factory=dict)
    purchased: frozenset[str] = frozenset()
    segments: tuple[str, ...] = ()


class Serving:
    def __init__(
        self,
        pool: asyncpg.Pool,
        consent: ConsentClient,
        live: LiveModels,
        weights: InteractionWeights | None = None,
    ) -> None:
        self._pool = pool
        self._consent = consent
        self._live = live
        self._weights = weights or InteractionWeights()

    async def _known(self, subject_id: str) -> Known:
        answer = await self._consent.check(subject_id, PURPOSE)
        if not answer.allowed:
            why = (
                NotPersonalized.CONSENT_UNAVAILABLE
                if answer.reason in ("consent_unavailable", "timeout")
                else NotPersonalized.NO_CONSENT
            )
            return Known(False, why)
        async with self._pool.acquire() as conn:
            subject = (await store.resolve(conn, [subject_id]))[subject_id]
            seen = await store.history(conn, subject, HISTORY)
            bought = await store.purchased(conn, subject)
            segments = await store.segments_of(conn, subject)
        history: dict[str, float] = {}
        for interaction in seen:  # the latest interactions are what the models score on
            history[interaction.item_id] = history.get(interaction.item_id, 0.0) + (
                self._weights.base(interaction.kind)
            )
        return Known(
            True,
            NotPersonalized.NO,
            subject,
            {item: weight for item, weight in history.items() if weight > 0},
            bought,
            tuple(segments),
        )

    def _versions(self, *sources: Source) -> list[tuple[Source, str]]:
        state = self._live.state
        versions = []
        for source in sources:
            if source is Source.ALS and state.als_version:
                versions.append((Source.ALS, state.als_version))
            elif source is Source.COOCCURRENCE:
                versions.append((Source.COOCCURRENCE, f"cooccurrence-live-{state.position}"))
            elif source is Source.POPULAR:
                versions.append((Source.POPULAR, f"popular-live-{state.position}"))
        return versions

    async def recommend(
        self,
        subject_id: str,
        k: int,
        context: Context,
        filters: Filters,
        context_items: Sequence[str],
    ) -> Served:
        known = await self._known(subject_id)
        rules = Rules(filters=filters, purchased=known.purchased, context=context)
        subject = Subject(
            user_id=known.subject_id or None,
            history=known.history,
            context_items=tuple(context_items),
            segments=known.segments,
            context_groups=tuple(
                context_groups(
                    country=context.country,
                    device_type=context.device_type,
                    local_hour=context.local_hour,
                )
            ),
        )
        now = self._live.popularity_now(datetime.now(UTC))
        answer = self._live.state.recommender.recommend(subject, k, now, rules)
        personalized = known.allowed and bool(known.history)
        why_not = known.why_not
        if known.allowed and not known.history:
            why_not = NotPersonalized.COLD_SUBJECT
        return Served(
            answer.items,
            personalized,
            why_not if not personalized else NotPersonalized.NO,
            self._versions(*_sources(answer)),
        )

    async def similar(
        self, item_id: str, k: int, context: Context, filters: Filters, subject_id: str
    ) -> Served:
        purchased: frozenset[str] = frozenset()
        if filters.exclude_purchased and subject_id:
            known = await self._known(subject_id)
            purchased = known.purchased  # empty without consent: the filter cannot apply
        rules = Rules(filters=filters, purchased=purchased, context=context)
        now = self._live.popularity_now(datetime.now(UTC))
        answer = self._live.state.recommender.similar_items(item_id, k, now, rules)
        return Served(
            answer.items,
            False,
            NotPersonalized.NO,
            self._versions(*_sources(answer)),
            item_known=answer.item_known,
        )

    async def popular(
        self,
        k: int,
        *,
        segment_id: str,
        context: Context,
        trending: bool,
        filters: Filters,
        window: timedelta | None,
    ) -> Served:
        state = self._live.state
        popularity = state.recommender.popularity
        group = GLOBAL
        reason = Reason(ReasonKind.TRENDING if trending else ReasonKind.POPULAR, text="popular")
        if segment_id:
            group = segment_group(segment_id)
            async with self._pool.acquire() as conn:
                if not await store.segment_exists(conn, segment_id):
                    raise NotFound(f"no segment {segment_id!r} with members here")
            reason = Reason(
                ReasonKind.POPULAR_IN_SEGMENT,
                segment_id=segment_id,
                text=f"popular in {segment_id}",
            )
        else:
            groups = context_groups(
                country=context.country,
                device_type=context.device_type,
                local_hour=context.local_hour,
            )
            if groups and popularity is not None and popularity.has_group(groups[0]):
                group = groups[0]
                reason = Reason(ReasonKind.POPULAR_IN_CONTEXT, text=f"popular in {group}")
        if popularity is None:
            return Served([], False, NotPersonalized.NO, [])
        now = self._live.popularity_now(datetime.now(UTC))
        depth = max(100, 3 * k)
        if trending:
            found = popularity.trending(depth, now, window or timedelta(hours=24), group=group)
            source = Source.TRENDING
        else:
            found = popularity.popular(depth, now, window or timedelta(days=7), group=group)
            source = Source.POPULAR
        categories = state.recommender.categories
        candidates = [
            Candidate(p.item_id, p.score, source, (reason,), categories.get(p.item_id, ""))
            for p in found
        ]
        rules = Rules(filters=replace(filters, exclude_purchased=False))  # nobody to ask about
        return Served(
            apply_rules(candidates, rules, k),
            False,
            NotPersonalized.NO,
            self._versions(Source.POPULAR),
        )


def _sources(answer: Answer) -> list[Source]:
    found = {c.source for c in answer.items}
    if answer.strategy is Strategy.BLEND:
        found |= {Source.COOCCURRENCE, Source.POPULAR}
    return sorted(found, key=lambda s: s.value)
