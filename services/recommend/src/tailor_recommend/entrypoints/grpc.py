"""The gRPC adapter of the recommend service: protobuf in, serving calls, protobuf out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tailor.recommend.v1 import recommend_pb2 as pb
from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_core.envelopes import timestamp
from tailor_core.errors import FieldViolation, InvalidArgument
from tailor_core.wire import check_text, request_duration
from tailor_recommend.adapters import store
from tailor_recommend.domain.reranking import Candidate, Context, Filters, Source
from tailor_recommend.live import LiveModels
from tailor_recommend.serving import NotPersonalized, Served, Serving
from tailor_recommend.training import Trainer

SURFACE = re.compile(r"^[a-z0-9_:]{0,64}$")
MAX_LISTED = 50
SOURCES = {
    Source.COOCCURRENCE: pb.MODEL_COOCCURRENCE,
    Source.ALS: pb.MODEL_ALS,
    Source.POPULAR: pb.MODEL_POPULAR,
    Source.TRENDING: pb.MODEL_TRENDING,
    Source.BLEND: pb.MODEL_BLEND,
}
WHY_NOT = {
    NotPersonalized.NO: pb.NON_PERSONALIZED_REASON_UNSPECIFIED,
    NotPersonalized.NO_CONSENT: pb.NON_PERSONALIZED_REASON_NO_CONSENT,
    NotPersonalized.CONSENT_UNAVAILABLE: pb.NON_PERSONALIZED_REASON_CONSENT_UNAVAILABLE,
    NotPersonalized.COLD_SUBJECT: pb.NON_PERSONALIZED_REASON_COLD_SUBJECT,
}
STATES = {
    "TRAINING": pb.MODEL_STATE_TRAINING,
    "SERVING": pb.MODEL_STATE_SERVING,
    "FAILED": pb.MODEL_STATE_FAILED,
    "RETIRED": pb.MODEL_STATE_SERVING,
}


def _problems(*checks: tuple[bool, str, str, str]) -> None:
    found = [FieldViolation(f, d, r) for bad, f, d, r in checks if bad]
    if found:
        raise InvalidArgument(found[0].description, found)


def _k(k: int) -> tuple[bool, str, str, str]:
    return (not 1 <= k <= 100, "k", "1..100 items", "OUT_OF_RANGE")


def _context(message: pb.ServingContext, path: str = "context") -> Context:
    for name in ("device_type", "locale", "country", "page", "channel"):
        check_text(getattr(message, name), f"{path}.{name}", 64)
    hour = message.local_hour if message.HasField("local_hour") else None
    _problems(
        (hour is not None and not 0 <= hour <= 23, f"{path}.local_hour", "0..23", "OUT_OF_RANGE")
    )
    return Context(
        device_type=message.device_type,
        local_hour=hour,
        locale=message.locale,
        country=message.country,
        page=message.page,
        channel=message.channel,
    )


def _filters(message: pb.Filters, path: str = "filters") -> Filters:
    _problems(
        (
            len(message.exclude_items) > MAX_LISTED,
            f"{path}.exclude_items",
            f"at most {MAX_LISTED} items",
            "TOO_MANY",
        ),
        (message.max_per_category < 0, f"{path}.max_per_category", "0 or more", "OUT_OF_RANGE"),
    )
    for name in ("exclude_items", "include_categories", "exclude_categories"):
        for index, value in enumerate(getattr(message, name)):
            check_text(value, f"{path}.{name}[{index}]", 256)
    return Filters(
        exclude_purchased=message.exclude_purchased,
        exclude_items=frozenset(message.exclude_items),
        include_categories=tuple(message.include_categories),
        exclude_categories=tuple(message.exclude_categories),
        max_per_category=message.max_per_category,
        diversify=message.diversify,
    )


def _item(candidate: Candidate) -> pb.RecommendedItem:
    return pb.RecommendedItem(
        item_id=candidate.item_id,
        score=candidate.score,
        source=SOURCES.get(candidate.source, pb.MODEL_UNSPECIFIED),
        category=candidate.category,
        reasons=[
            pb.Reason(
                kind=pb.ReasonKind.Value(f"REASON_KIND_{reason.kind.name}"),
                related_item_id=reason.related_item_id,
                segment_id=reason.segment_id,
                text=reason.text,
            )
            for reason in candidate.reasons
        ],
    )


def _versions(served: Served) -> list[pb.ModelVersion]:
    return [pb.ModelVersion(model=SOURCES[s], version=v) for s, v in served.versions]


class RecommendServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(
        self, pool: asyncpg.Pool, serving: Serving, live: LiveModels, trainer: Trainer
    ) -> None:
        self._pool = pool
        self._serving = serving
        self._live = live
        self._trainer = trainer

    async def Recommend(self, request: Any, context: Any) -> pb.RecommendResponse:
        _problems(
            (not request.subject_id, "subject_id", "give a subject id", "REQUIRED"),
            _k(request.k),
            (
                len(request.context_items) > MAX_LISTED,
                "context_items",
                f"at most {MAX_LISTED} items",
                "TOO_MANY",
            ),
            (
                not SURFACE.fullmatch(request.surface),
                "surface",
                "lower-case letters, digits, '_' and ':', at most 64",
                "BAD_SURFACE",
            ),
        )
        check_text(request.subject_id, "subject_id", 256)
        for index, item in enumerate(request.context_items):
            check_text(item, f"context_items[{index}]", 256)
        served = await self._serving.recommend(
            request.subject_id,
            request.k,
            _context(request.context),
            _filters(request.filters),
            list(request.context_items),
        )
        return pb.RecommendResponse(
            items=[_item(c) for c in served.items],
            personalized=served.personalized,
            non_personalized_reason=WHY_NOT[served.why_not],
            model_versions=_versions(served),
            recommendation_id=served.recommendation_id,
        )

    async def SimilarItems(self, request: Any, context: Any) -> pb.SimilarItemsResponse:
        _problems((not request.item_id, "item_id", "give an item id", "REQUIRED"), _k(request.k))
        check_text(request.item_id, "item_id", 256)
        check_text(request.subject_id, "subject_id", 256)
        served = await self._serving.similar(
            request.item_id,
            request.k,
            _context(request.context),
            _filters(request.filters),
            request.subject_id,
        )
        return pb.SimilarItemsResponse(
            items=[_item(c) for c in served.items],
            item_known=served.item_known,
            model_versions=_versions(served),
            recommendation_id=served.recommendation_id,
        )

    async def Popular(self, request: Any, context: Any) -> pb.PopularResponse:
        window = request_duration(request, "window", "window")
        _problems(
            _k(request.k),
            (
                window is not None and not 3600 <= window.total_seconds() <= 365 * 24 * 3600,
                "window",
                "an hour to 365 days",
                "OUT_OF_RANGE",
            ),
        )
        check_text(request.segment_id, "segment_id", 64)
        served = await self._serving.popular(
            request.k,
            segment_id=request.segment_id,
            context=_context(request.context),
            trending=request.trending,
            filters=_filters(request.filters),
            window=window,
        )
        return pb.PopularResponse(
            items=[_item(c) for c in served.items],
            model_versions=_versions(served),
            recommendation_id=served.recommendation_id,
        )

    async def TrainModel(self, request: Any, context: Any) -> pb.TrainModelResponse:
        wanted = set(request.models) or {pb.MODEL_ALS}
        batch = {pb.MODEL_ALS}
        if wanted - batch:
            index = next(i for i, m in enumerate(request.models) if m not in batch)
            raise InvalidArgument(
                "only ALS is trained in batch",
                [FieldViolation(f"models[{index}]", "not a batch model", "NOT_BATCH")],
            )
        await self._trainer.start()
        started = [m for m in await self._infos() if m.model in wanted]
        for info in started:
            # Started, whatever it is by now: a small data set may be trained already.
            info.state = pb.MODEL_STATE_TRAINING
        return pb.TrainModelResponse(models=started)

    async def GetModelStatus(self, request: Any, context: Any) -> pb.GetModelStatusResponse:
        response = pb.GetModelStatusResponse(models=await self._infos())
        state = self._live.state
        if state.applied_at is not None:
            response.realtime_updated_at.CopyFrom(timestamp(state.applied_at))
        async with self._pool.acquire() as conn:
            behind = await store.latest_position(conn) - state.position
        if behind <= 0:
            response.realtime_lag.FromSeconds(0)
        elif state.applied_at is not None:
            response.realtime_lag.FromTimedelta(datetime.now(UTC) - state.applied_at)
        return response

    async def _infos(self) -> list[pb.ModelInfo]:
        async with self._pool.acquire() as conn:
            rows = await store.model_rows(conn)
        state = self._live.state
        recommender = state.recommender
        infos = []
        newest: dict[str, Any] = {}
        serving: dict[str, Any] = {}
        for row in rows:
            (serving if row["state"] == "SERVING" else newest)[row["model"]] = row
        als = pb.ModelInfo(model=pb.MODEL_ALS, state=pb.MODEL_STATE_NOT_TRAINED)
        current = serving.get("als")
        latest = newest.get("als")
        if current is not None:
            als.version = current["version"]
            als.state = pb.MODEL_STATE_SERVING
            if current["trained_at"]:
                als.trained_at.CopyFrom(timestamp(current["trained_at"]))
            als.users, als.items = current["users"], current["items"]
            als.interactions = current["interactions"]
            als.training_seconds = current["training_seconds"]
            als.training_peak_bytes = current["peak_bytes"]
            for key, value in json.loads(current["metrics"]).items():
                als.metrics[key] = float(value)
        newer = latest is not None and (
            current is None
            or latest["started_at"] > (current["trained_at"] or latest["started_at"])
        )
        if newer and latest is not None and latest["state"] in ("TRAINING", "FAILED"):
            als.state = STATES[latest["state"]]
            als.error = latest["error"]
        if self._trainer.next_training_at is not None:
            als.next_training_at.CopyFrom(timestamp(self._trainer.next_training_at))
        infos.append(als)
        cooccurrence = recommender.cooccurrence
        infos.append(
            pb.ModelInfo(
                model=pb.MODEL_COOCCURRENCE,
                version=f"cooccurrence-live-{state.position}",
                state=pb.MODEL_STATE_SERVING,
                users=cooccurrence.users if cooccurrence else 0,
                items=cooccurrence.items if cooccurrence else 0,
                interactions=cooccurrence.events if cooccurrence else 0,
            )
        )
        for model in (pb.MODEL_POPULAR, pb.MODEL_TRENDING):
            infos.append(
                pb.ModelInfo(
                    model=model,
                    version=f"popular-live-{state.position}",
                    state=pb.MODEL_STATE_SERVING,
                )
            )
        return infos
