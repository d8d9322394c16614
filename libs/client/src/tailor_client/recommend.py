"""Recommendations for a subject, similar and popular items, and model management
(``tailor.recommend.v1.RecommendService``, ``127.0.0.1:50055`` by default).

Serving needs a token with ``recommend:read``, training and status ``recommend:admin``.
Missing consent is not an error: the answer is then non-personalized and says why
(:attr:`Recommendations.non_personalized_reason`). Answers come as :class:`Recommendations`:
a list of :class:`Recommendation` with the facts around it, and the response itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

from google.protobuf.duration_pb2 import Duration

from tailor.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from tailor_client.service_client import AsyncServiceClient, SyncServiceClient

Model: TypeAlias = recommend_pb2.Model.ValueType
_Response: TypeAlias = (
    recommend_pb2.RecommendResponse
    | recommend_pb2.SimilarItemsResponse
    | recommend_pb2.PopularResponse
)


def _name(enum: Any, number: int, prefix: str) -> str:
    return str(enum.Name(number)).removeprefix(prefix).lower()


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One item: ``source`` is the model that produced it (``"cooccurrence"``, ``"als"``,
    ``"popular"``, ``"trending"``, ``"blend"``), ``reasons`` readable texts, strongest first
    (``"because you viewed 85123A"``); ``score`` compares within one answer only."""

    item_id: str
    score: float
    category: str
    source: str
    reasons: tuple[str, ...]

    @classmethod
    def from_proto(cls, item: recommend_pb2.RecommendedItem) -> Recommendation:
        return cls(
            item_id=item.item_id,
            score=item.score,
            category=item.category,
            source=_name(recommend_pb2.Model, item.source, "MODEL_"),
            reasons=tuple(reason.text for reason in item.reasons),
        )


@dataclass(frozen=True, slots=True)
class Recommendations(Sequence[Recommendation]):
    """An answer: its items best first (iterate, index or ``len`` it), whether the
    subject's stored data was used and why not (``"no_consent"``,
    ``"consent_unavailable"``, ``"cold_subject"``; empty when personalized, and for Popular
    and SimilarItems, which are never personalized), ``item_known`` (SimilarItems: False
    when the item was cold and popular items came instead; True otherwise), the model
    versions used (model name -> version), the id to send back as
    ``ProductEvent.recommendation_id`` for attribution, and the response itself."""

    items: tuple[Recommendation, ...]
    recommendation_id: str
    model_versions: dict[str, str]
    personalized: bool
    non_personalized_reason: str
    item_known: bool
    response: _Response

    @classmethod
    def from_proto(cls, response: _Response) -> Recommendations:
        personalized, why, known = False, "", True
        if isinstance(response, recommend_pb2.RecommendResponse):
            personalized = response.personalized
            if response.non_personalized_reason:
                why = _name(
                    recommend_pb2.NonPersonalizedReason,
                    response.non_personalized_reason,
                    "NON_PERSONALIZED_REASON_",
                )
        elif isinstance(response, recommend_pb2.SimilarItemsResponse):
            known = response.item_known
        return cls(
            items=tuple(Recommendation.from_proto(item) for item in response.items),
            recommendation_id=response.recommendation_id,
            model_versions={
                _name(recommend_pb2.Model, v.model, "MODEL_"): v.version
                for v in response.model_versions
            },
            personalized=personalized,
            non_personalized_reason=why,
            item_known=known,
            response=response,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


class AsyncRecommendClient(AsyncServiceClient):
    """The recommend service from asyncio code. ``filters`` and ``context`` take the
    protobuf messages (``recommend_pb2.Filters(exclude_purchased=True, max_per_category=2)``,
    ``recommend_pb2.ServingContext(device_type="mobile", local_hour=20)``)."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(target, token, **options)
        self._stub = recommend_pb2_grpc.RecommendServiceStub(self._channel)

    async def recommend(
        self,
        subject_id: str,
        *,
        k: int = 10,
        context_items: Sequence[str] = (),
        exclude_purchased: bool = False,
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
        surface: str = "",
    ) -> Recommendations:
        """Up to ``k`` (1..100) items for the subject, best first; ``context_items`` (the
        cart, the product shown; at most 50) seed the answer even without consent;
        ``exclude_purchased`` adds to ``filters``."""
        request = recommend_pb2.RecommendRequest(
            subject_id=subject_id,
            k=k,
            context_items=context_items,
            filters=filters,
            context=context,
            surface=surface,
        )
        if exclude_purchased:
            request.filters.exclude_purchased = True
        reply: recommend_pb2.RecommendResponse = await self._call(self._stub.Recommend, request)
        return Recommendations.from_proto(reply)

    async def similar_items(
        self,
        item_id: str,
        *,
        k: int = 10,
        subject_id: str = "",
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
    ) -> Recommendations:
        """Up to ``k`` items like ``item_id``; a cold item gets popular items with
        ``item_known`` False. ``subject_id`` serves subject filters (exclude_purchased)."""
        reply: recommend_pb2.SimilarItemsResponse = await self._call(
            self._stub.SimilarItems,
            recommend_pb2.SimilarItemsRequest(
                item_id=item_id, k=k, subject_id=subject_id, filters=filters, context=context
            ),
        )
        return Recommendations.from_proto(reply)

    async def popular(
        self,
        *,
        k: int = 10,
        segment_id: str = "",
        trending: bool = False,
        window: timedelta | None = None,
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
    ) -> Recommendations:
        """Popular (or ``trending``) items, overall or among ``segment_id``'s members, over
        ``window`` (1 h..365 d; default 7 days, or 24 hours for trending)."""
        request = recommend_pb2.PopularRequest(
            k=k, segment_id=segment_id, trending=trending, filters=filters, context=context
        )
        if window is not None:
            duration = Duration()
            duration.FromTimedelta(window)
            request.window.CopyFrom(duration)
        reply: recommend_pb2.PopularResponse = await self._call(self._stub.Popular, request)
        return Recommendations.from_proto(reply)

    async def train_model(self, models: Sequence[Model] = ()) -> list[recommend_pb2.ModelInfo]:
        """Start training batch models now (empty = every batch model, i.e. ALS); each
        model's state (TRAINING). The new version serves once ready."""
        reply: recommend_pb2.TrainModelResponse = await self._call(
            self._stub.TrainModel,
            recommend_pb2.TrainModelRequest(models=models),
            idempotent=False,
        )
        return list(reply.models)

    async def get_model_status(self) -> recommend_pb2.GetModelStatusResponse:
        """Every model's version, state, coverage and metrics, and the real-time lag."""
        reply: recommend_pb2.GetModelStatusResponse = await self._call(
            self._stub.GetModelStatus, recommend_pb2.GetModelStatusRequest()
        )
        return reply


class RecommendClient(SyncServiceClient[AsyncRecommendClient]):
    """The recommend service from code without an event loop; the same methods as
    :class:`AsyncRecommendClient`, blocking."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(lambda: AsyncRecommendClient(target, token, **options))

    def recommend(
        self,
        subject_id: str,
        *,
        k: int = 10,
        context_items: Sequence[str] = (),
        exclude_purchased: bool = False,
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
        surface: str = "",
    ) -> Recommendations:
        return self._run(
            self._client.recommend(
                subject_id,
                k=k,
                context_items=context_items,
                exclude_purchased=exclude_purchased,
                filters=filters,
                context=context,
                surface=surface,
            )
        )

    def similar_items(
        self,
        item_id: str,
        *,
        k: int = 10,
        subject_id: str = "",
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
    ) -> Recommendations:
        return self._run(
            self._client.similar_items(
                item_id, k=k, subject_id=subject_id, filters=filters, context=context
            )
        )

    def popular(
        self,
        *,
        k: int = 10,
        segment_id: str = "",
        trending: bool = False,
        window: timedelta | None = None,
        filters: recommend_pb2.Filters | None = None,
        context: recommend_pb2.ServingContext | None = None,
    ) -> Recommendations:
        return self._run(
            self._client.popular(
                k=k,
                segment_id=segment_id,
                trending=trending,
                window=window,
                filters=filters,
                context=context,
            )
        )

    def train_model(self, models: Sequence[Model] = ()) -> list[recommend_pb2.ModelInfo]:
        return self._run(self._client.train_model(models))

    def get_model_status(self) -> recommend_pb2.GetModelStatusResponse:
        return self._run(self._client.get_model_status())
