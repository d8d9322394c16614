"""The recommend service's own settings, on top of the core's."""

from __future__ import annotations

from pydantic import Field

from tailor_core.settings import ServiceSettings


class RecommendSettings(ServiceSettings):
    #: Seconds between reads of new interactions by each replica's real-time models (the
    #: part of the real-time update lag that is not the consumer's).
    follow_seconds: float = Field(default=0.2, gt=0, le=60)
    #: Half-life of interactions in the co-occurrence model, in days (older count less).
    half_life_days: float = Field(default=90, gt=0, le=3650)
    #: Seconds between scheduled ALS trainings; 0 turns the schedule off.
    train_interval_seconds: float = Field(default=6 * 3600, ge=0, le=30 * 24 * 3600)
    #: ALS latent factors, regularisation, confidence scale, iterations, and the half-life of
    #: interactions in its matrix. The defaults are the ones bench/recommend_quality.py chose
    #: on a validation month of the UCI data (docs/recommend.md has the table).
    als_factors: int = Field(default=32, ge=2, le=512)
    als_regularization: float = Field(default=5.0, gt=0, le=100)
    als_alpha: float = Field(default=1.0, gt=0, le=100)
    als_iterations: int = Field(default=15, ge=1, le=200)
    als_half_life_days: float = Field(default=45, gt=0, le=3650)
    #: Days of interactions the "popular" fallback counts.
    popular_window_days: float = Field(default=7, gt=0, le=365)
    #: Messages applied per transaction by the consumers.
    events_batch: int = Field(default=500, ge=1, le=5000)
