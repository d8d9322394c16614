"""The models a replica serves from, kept current: the real-time co-occurrence and
popularity models follow the interactions table by position (so every replica sees every
interaction, whichever replica's consumer stored it), and the batch ALS model is reloaded
when a new version starts serving. Swaps replace one reference, so a request in progress
keeps the models it started with."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from tailor_core.db import Connection
from tailor_recommend.adapters import store
from tailor_recommend.domain.blending import BlendWeights, Recommender
from tailor_recommend.domain.cooccurrence import CooccurrenceModel
from tailor_recommend.domain.factorization import AlsModel
from tailor_recommend.domain.interactions import InteractionWeights
from tailor_recommend.domain.popularity import (
    PopularityModel,
    category_group,
    context_groups,
    segment_group,
)

log = structlog.get_logger(__name__)

PAGE = 2000
#: Interactions applied between two turns of the event loop while catching up.
YIELD_EVERY = 100
#: Seconds between reads of segment members (for popularity per segment).
MEMBERS_EVERY_SECONDS = 10.0
#: Blend weights. With an ALS model: what the offline evaluation chose on a validation month
#: of the UCI data (co-occurrence adds nothing there once ALS ranks; it still answers
#: SimilarItems). Without one: co-occurrence leads, popularity fills.
WITH_ALS = BlendWeights(als=1.0, cooccurrence=0.0, popular=0.3)
WITHOUT_ALS = BlendWeights(als=0.0, cooccurrence=1.0, popular=0.1)


@dataclass
class LiveState:
    """What one replica holds: the recommender and how far it has read."""

    recommender: Recommender
    position: int = 0
    epoch: int = -1
    als_version: str = ""
    updated_at: datetime | None = None  # when the latest interaction applied happened
    applied_at: datetime | None = None  # when it was applied here
    latest_interaction_at: datetime | None = None
    members: dict[str, list[str]] = field(default_factory=dict)
    members_read_at: float = 0.0  # monotonic


def _fresh_models(half_life: timedelta) -> tuple[CooccurrenceModel, PopularityModel]:
    return CooccurrenceModel(half_life=half_life), PopularityModel()


class LiveModels:
    """Follows the tables and holds the current :class:`LiveState`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        follow_seconds: float,
        half_life: timedelta,
        popular_window: timedelta,
        weights: InteractionWeights | None = None,
    ) -> None:
        self._pool = pool
        self._follow = follow_seconds
        self._half_life = half_life
        self._weights = weights or InteractionWeights()
        cooccurrence, popularity = _fresh_models(half_life)
        self.state = LiveState(
            Recommender(
                cooccurrence=cooccurrence,
                popularity=popularity,
                popular_window=popular_window,
                weights=WITHOUT_ALS,
            )
        )
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
                self.ready.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("model refresh failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._follow)

    async def stop(self) -> None:
        self._stopping.set()

    async def refresh(self) -> None:
        """Apply new interactions; start afresh after an erasure; load a new ALS version."""
        state = self.state
        async with self._pool.acquire() as conn:
            epoch = await store.epoch(conn)
            if epoch != state.epoch:
                state = await self._rebuild(conn, epoch)
            if time.monotonic() - state.members_read_at > MEMBERS_EVERY_SECONDS:
                # Popularity per segment counts what members did while members.
                state.members = await store.all_members(conn)
                state.members_read_at = time.monotonic()
            await self._follow_rows(conn, state)
            version = await store.serving_version(conn, "als")
            if version is not None and version != state.als_version:
                serving = await store.serving_model(conn, "als")  # the artifact, once
                if serving is not None:
                    model = AlsModel.from_bytes(bytes(serving["artifact"]))
                    state.recommender = replace(state.recommender, als=model, weights=WITH_ALS)
                    state.als_version = serving["version"]
                    log.info("model swapped in", model="als", version=serving["version"])
        self.state = state

    async def _rebuild(self, conn: Connection, epoch: int) -> LiveState:
        cooccurrence, popularity = _fresh_models(self._half_life)
        fresh = LiveState(
            replace(self.state.recommender, cooccurrence=cooccurrence, popularity=popularity),
            epoch=epoch,
            als_version=self.state.als_version,
            members=await store.all_members(conn),
            members_read_at=time.monotonic(),
        )
        log.info("real-time models rebuilt from the interactions", epoch=epoch)
        return fresh

    async def _follow_rows(self, conn: Connection, state: LiveState) -> None:
        """Apply the interactions stored since the last tick, yielding to requests often."""
        recommender = state.recommender
        assert recommender.cooccurrence is not None
        assert recommender.popularity is not None
        while True:
            rows = await store.interactions_after(conn, state.position, PAGE)
            if not rows:
                return
            # The page may name items first described with it: read the catalogue afresh.
            recommender = state.recommender = replace(
                state.recommender, categories=await store.categories(conn)
            )
            assert recommender.cooccurrence is not None
            assert recommender.popularity is not None
            categories = recommender.categories
            for number, row in enumerate(rows):
                if number and number % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a large catch-up must not hold up the requests
                interaction = row.interaction
                weight = self._weights.base(interaction.kind)
                recommender.cooccurrence.add(
                    interaction.user_id, interaction.item_id, weight, interaction.at
                )
                groups = [
                    *context_groups(country=row.country, device_type=row.device),
                    *(segment_group(s) for s in state.members.get(interaction.user_id, ())),
                ]
                category = categories.get(interaction.item_id, "")
                if category:
                    groups.append(category_group(category))
                recommender.popularity.add(interaction.item_id, weight, interaction.at, groups)
                latest = state.latest_interaction_at
                state.latest_interaction_at = (
                    interaction.at if latest is None else max(latest, interaction.at)
                )
            state.position = rows[-1].position
            state.applied_at = datetime.now(UTC)
            if len(rows) < PAGE:
                return

    def popularity_now(self, now: datetime) -> datetime:
        """Popularity windows end at the latest interaction when it is older than now, so a
        quiet shop (or an imported history) still has popular items to fall back on."""
        latest = self.state.latest_interaction_at
        return now if latest is None or latest >= now else latest + timedelta(seconds=1)
