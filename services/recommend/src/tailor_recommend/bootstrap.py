"""Composition root of the recommend service: the one place that wires its parts together."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_core.app import Components, ServiceContext, ServiceDefinition
from tailor_core.server import ServiceBinding
from tailor_recommend import privacy_handlers
from tailor_recommend.consumers import recommend_consumers
from tailor_recommend.domain.factorization import AlsParams
from tailor_recommend.domain.interactions import InteractionWeights
from tailor_recommend.entrypoints.grpc import RecommendServicer
from tailor_recommend.live import LiveModels
from tailor_recommend.serving import Serving
from tailor_recommend.settings import RecommendSettings
from tailor_recommend.training import Trainer


async def build(context: ServiceContext) -> Components:
    """Build the recommend service's gRPC service, consumers, model loops and privacy part."""
    settings = context.settings
    assert isinstance(settings, RecommendSettings)
    weights = InteractionWeights()
    live = LiveModels(
        context.pool,
        follow_seconds=settings.follow_seconds,
        half_life=timedelta(days=settings.half_life_days),
        popular_window=timedelta(days=settings.popular_window_days),
        weights=weights,
    )
    trainer = Trainer(
        context.pool,
        params=AlsParams(
            factors=settings.als_factors,
            regularization=settings.als_regularization,
            alpha=settings.als_alpha,
            iterations=settings.als_iterations,
        ),
        weights=replace(weights, half_life=timedelta(days=settings.als_half_life_days)),
        interval_seconds=settings.train_interval_seconds,
    )
    serving = Serving(context.pool, context.consent, live, weights)
    return Components(
        services=[
            ServiceBinding(
                recommend_pb2_grpc.add_RecommendServiceServicer_to_server,
                RecommendServicer(context.pool, serving, live, trainer),
                "tailor.recommend.v1.RecommendService",
            ),
        ],
        consumers=recommend_consumers(
            pool=context.pool, js=context.js, naming=context.naming, batch=settings.events_batch
        ),
        background=[live, trainer],
        privacy=privacy_handlers.handlers(),
    )


DEFINITION = ServiceDefinition(
    name="recommend",
    migrations_package="tailor_recommend.migrations",
    build=build,
    settings_class=RecommendSettings,
)
