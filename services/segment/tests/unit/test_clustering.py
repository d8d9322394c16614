"""Segment discovery: vectors from flat traits, K-Means with k by silhouette, assignment."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score  # type: ignore[import-untyped]

from tailor_core.errors import DomainError, FailedPrecondition, InvalidArgument
from tailor_segment.domain.clustering import (
    BEHAVIOURAL_FEATURES,
    ClusterFeature,
    ClusterModel,
    Discovery,
    Preprocessing,
    assign,
    cluster_label,
    discover,
    select_features,
    vectorize,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

# Planted behaviour: log1p-space means for counts and money, days for recency.
BLOBS: dict[str, dict[str, float]] = {
    "casual": {"days": 20, "orders": 2.0, "revenue": 5.0, "sessions": 2.0, "engagement": 0.3},
    "whales": {"days": 3, "orders": 4.5, "revenue": 9.5, "sessions": 4.0, "engagement": 0.95},
    "lapsed": {"days": 150, "orders": 2.0, "revenue": 5.0, "sessions": 0.0, "engagement": 0.0},
    "browsers": {"days": 2, "orders": 0.0, "revenue": 0.0, "sessions": 3.5, "engagement": 0.8},
}


def _traits(blob: str, rng: np.random.Generator) -> dict[str, Any]:
    """One flat trait map drawn from a planted blob, shaped like the profile service's."""
    centre = BLOBS[blob]

    def count(log_mean: float) -> int:
        return max(0, round(math.expm1(rng.normal(log_mean, 0.1)))) if log_mean else 0

    orders, sessions = count(centre["orders"]), count(centre["sessions"])
    revenue = math.expm1(rng.normal(centre["revenue"], 0.1)) if centre["revenue"] else 0.0
    days = max(0.0, rng.normal(centre["days"], 1.0))
    recent = 0 if days > 30 else 1  # nothing in the 30-day windows of a lapsed subject
    return {
        "last_seen": (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z"),
        "first_seen": "2024-01-01T00:00:00Z",
        "computed.sessions_30d": sessions,
        "computed.sessions_lifetime": sessions * 4,
        "computed.engagement_rate_30d": round(
            min(1.0, max(0.0, rng.normal(centre["engagement"], 0.03))), 4
        ),
        "computed.orders_30d": recent * orders // 3,
        "computed.orders_lifetime": orders,
        "computed.revenue_30d.amount": f"{recent * revenue / 3:.2f}",
        "computed.revenue_lifetime.amount": f"{revenue:.2f}",
        "computed.average_order_value.amount": f"{revenue / orders if orders else 0:.2f}",
        # Behaviour every blob shares: noise the clustering must see through.
        # (counts large enough to be smooth: a 0/1 figure would be real structure).
        "computed.refunds_lifetime": int(rng.poisson(8)),
        "computed.social_engagements_30d": int(rng.poisson(12)),
        "computed.support.interactions_lifetime": int(rng.poisson(10)),
        "demographics.country": "GB",
    }


def _population(
    sizes: Mapping[str, int], seed: int = 1, prefix: str = "s"
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Profiles drawn from the blobs, and the blob of each subject."""
    rng = np.random.default_rng(seed)
    profiles: dict[str, dict[str, Any]] = {}
    truth: dict[str, str] = {}
    for blob, size in sizes.items():
        for index in range(size):
            subject = f"{prefix}-{blob}-{index:04d}"
            profiles[subject] = _traits(blob, rng)
            truth[subject] = blob
    return profiles, truth


FOUR_BLOBS = {"casual": 300, "whales": 120, "lapsed": 200, "browsers": 180}


@pytest.fixture(scope="module")
def planted() -> tuple[dict[str, dict[str, Any]], dict[str, str], Discovery]:
    profiles, truth = _population(FOUR_BLOBS)
    discovery = discover(vectorize(profiles, now=NOW), (2, 8), seed=42)
    return profiles, truth, discovery


def _cluster_of_blob(discovery: Discovery, truth: Mapping[str, str], blob: str) -> int:
    labels = Counter(
        c for s, c in zip(discovery.subject_ids, discovery.labels, strict=True) if truth[s] == blob
    )
    return labels.most_common(1)[0][0]


# --- discovery -----------------------------------------------------------------------------


def test_planted_blobs_are_found_with_their_number_and_members(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, truth, discovery = planted
    assert discovery.k == len(FOUR_BLOBS)
    expected = [truth[s] for s in discovery.subject_ids]
    assert adjusted_rand_score(expected, discovery.labels) >= 0.95
    assert [s.k for s in discovery.scores] == list(range(2, 9))
    assert discovery.silhouette == max(s.silhouette for s in discovery.scores)


@pytest.mark.parametrize(
    "sizes",
    [
        {"casual": 200, "whales": 200, "lapsed": 200, "browsers": 200},
        {"casual": 500, "whales": 50, "lapsed": 250, "browsers": 250},
    ],
)
def test_planted_blobs_are_found_whatever_their_proportions(sizes: dict[str, int]) -> None:
    profiles, truth = _population(sizes, seed=6)
    discovery = discover(vectorize(profiles, now=NOW), (2, 8), seed=0)
    assert discovery.k == 4
    assert adjusted_rand_score([truth[s] for s in discovery.subject_ids], discovery.labels) >= 0.95


def test_three_planted_blobs_give_three_clusters() -> None:
    profiles, truth = _population({"browsers": 150, "whales": 100, "lapsed": 120}, seed=5)
    discovery = discover(vectorize(profiles, now=NOW), (2, 6), seed=3)
    assert discovery.k == 3
    assert adjusted_rand_score([truth[s] for s in discovery.subject_ids], discovery.labels) >= 0.95


def test_same_seed_same_data_gives_the_same_clusters() -> None:
    profiles, _ = _population(FOUR_BLOBS, seed=9)
    first = discover(vectorize(profiles, now=NOW), seed=11)
    # Insertion order of the profiles must not matter either.
    reordered = dict(reversed(list(profiles.items())))
    second = discover(vectorize(reordered, now=NOW), seed=11)
    assert first.labels == second.labels
    assert first.scores == second.scores
    assert first.model == second.model


def test_cluster_sizes_shares_and_ids_by_size(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, _, discovery = planted
    sizes = [c.size for c in discovery.clusters]
    assert sizes == sorted(FOUR_BLOBS.values(), reverse=True)
    assert sum(sizes) == discovery.profiles == sum(FOUR_BLOBS.values())
    assert math.isclose(sum(c.share for c in discovery.clusters), 1.0)
    assert [c.cluster_id for c in discovery.clusters] == list(range(discovery.k))
    assert len(discovery.members(0)) == sizes[0]


def test_distinguishing_features_name_the_planted_difference(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, truth, discovery = planted
    lapsed = discovery.clusters[_cluster_of_blob(discovery, truth, "lapsed")]
    top = {f.feature: f for f in lapsed.features[:2]}
    assert "days_since_last_seen" in top
    recency = top["days_since_last_seen"]
    assert recency.direction == "higher"
    assert recency.cluster_mean == pytest.approx(150, abs=2)
    assert recency.population_mean < 60
    assert "higher days_since_last_seen" in lapsed.label

    whales = discovery.clusters[_cluster_of_blob(discovery, truth, "whales")]
    money = {f.feature for f in whales.features if f.direction == "higher"}
    assert money & {"computed.revenue_lifetime.amount", "computed.average_order_value.amount"}
    assert whales.label.startswith("higher ")
    assert 3 <= len(whales.features) <= 5
    strengths = [abs(f.z_score) for f in whales.features]
    assert strengths == sorted(strengths, reverse=True)


def test_centroid_is_in_original_units(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, truth, discovery = planted
    whales = discovery.clusters[_cluster_of_blob(discovery, truth, "whales")]
    assert whales.centroid["computed.revenue_lifetime.amount"] == pytest.approx(
        math.expm1(9.5), rel=0.1
    )
    assert whales.centroid["days_since_last_seen"] == pytest.approx(3, abs=1)
    assert set(whales.centroid) == set(BEHAVIOURAL_FEATURES)


def test_silhouette_on_a_sample_still_finds_the_blobs() -> None:
    profiles, truth = _population(FOUR_BLOBS, seed=4)
    matrix = vectorize(profiles, now=NOW)
    first = discover(matrix, (2, 6), seed=8, sample_size=200)
    second = discover(matrix, (2, 6), seed=8, sample_size=200)
    assert first.k == 4
    assert first.scores == second.scores
    assert adjusted_rand_score([truth[s] for s in first.subject_ids], first.labels) >= 0.95


# --- assignment and the stored model ----------------------------------------------------------


def test_assign_puts_new_subjects_in_their_blobs_cluster(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, truth, discovery = planted
    newcomers, new_truth = _population({b: 25 for b in FOUR_BLOBS}, seed=77, prefix="new")
    for subject, traits in newcomers.items():
        expected = _cluster_of_blob(discovery, truth, new_truth[subject])
        assert assign(discovery.model, traits, NOW) == expected, subject


def test_assign_agrees_with_the_run_for_its_own_members(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    profiles, _, discovery = planted
    assigned = [assign(discovery.model, profiles[s], NOW) for s in discovery.subject_ids]
    assert assigned == list(discovery.labels)


def test_assign_fills_missing_traits_with_the_fitted_medians(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    _, truth, discovery = planted
    newcomers, _ = _population({"lapsed": 1}, seed=13, prefix="new")
    traits = next(iter(newcomers.values()))
    for gone in ("computed.social_engagements_30d", "computed.average_order_value.amount"):
        del traits[gone]
    assert assign(discovery.model, traits, NOW) == _cluster_of_blob(discovery, truth, "lapsed")
    # Nothing known at all: the subject is the typical (median) one, placed the same way
    # every time.
    p = discovery.model.preprocessing
    typical = p.transform(p.impute(np.full((1, len(p.features)), np.nan)))[0]
    nearest = int(np.argmin(((np.asarray(discovery.model.centroids) - typical) ** 2).sum(axis=1)))
    assert assign(discovery.model, {}, NOW) == nearest


def test_cluster_model_round_trips_through_json(
    planted: tuple[dict[str, dict[str, Any]], dict[str, str], Discovery],
) -> None:
    profiles, _, discovery = planted
    text = discovery.model.to_json()
    restored = ClusterModel.from_json(text)
    assert restored == discovery.model
    assert restored.to_json() == text
    subject = discovery.subject_ids[0]
    assert assign(restored, profiles[subject], NOW) == discovery.labels[0]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"format": 99}',
        '{"format": 1, "features": ["a"], "medians": [1.0], "log_scaled": [true], '
        '"means": [0.0], "scales": [1.0], "centroids": [[0.0, 1.0]]}',
        '{"format": 1, "features": ["a"], "medians": [1.0], "log_scaled": [true], '
        '"means": [0.0], "scales": [1.0], "centroids": []}',
    ],
)
def test_malformed_stored_model_is_a_domain_error(text: str) -> None:
    with pytest.raises(DomainError, match="malformed"):
        ClusterModel.from_json(text)


# --- vectors --------------------------------------------------------------------------------


def test_vectorize_imputes_medians_derives_recency_and_log_scales_counts() -> None:
    profiles: dict[str, dict[str, Any]] = {
        "a": {"last_seen": "2026-05-31T12:00:00Z", "computed.orders_lifetime": 0},
        "b": {"last_seen": "2026-05-22T12:00:00+00:00", "computed.orders_lifetime": 9},
        "c": {"computed.orders_lifetime": 99},  # never seen: recency unknown
        "d": {"last_seen": "2026-05-29T12:00:00Z", "computed.orders_lifetime": "bad"},
    }
    matrix = vectorize(profiles, ("days_since_last_seen", "computed.orders_lifetime"), now=NOW)
    assert matrix.subject_ids == ("a", "b", "c", "d")
    # Recency 1, 10, median of (1, 10, 3) = 3, 3 days; orders 0, 9, 99, median 9.
    assert matrix.raw.tolist() == [[1.0, 0.0], [10.0, 9.0], [3.0, 99.0], [3.0, 9.0]]
    assert matrix.preprocessing.log_scaled == (False, True)
    logs = np.log1p([0.0, 9.0, 99.0, 9.0])
    expected = (logs - logs.mean()) / logs.std()
    assert matrix.standardized[:, 1] == pytest.approx(expected)
    assert matrix.standardized.mean(axis=0) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert matrix.standardized.std(axis=0) == pytest.approx([1.0, 1.0])


def test_missing_event_counts_mean_none_happened() -> None:
    feature = "computed.event_counts.Product Viewed.last_30d"
    profiles = {"a": {feature: 4}, "b": {feature: 6}, "c": {}}
    matrix = vectorize(profiles, (feature,), now=NOW)
    assert matrix.raw[:, 0].tolist() == [4.0, 6.0, 0.0]


def test_select_features_defaults_and_accepts_catalogue_figures() -> None:
    assert select_features([]) == BEHAVIOURAL_FEATURES
    chosen = ["computed.rfm.monetary", "computed.event_counts.Order Completed.lifetime"]
    assert select_features(chosen) == tuple(chosen)


def test_select_features_rejects_unknown_and_repeated_names() -> None:
    with pytest.raises(InvalidArgument) as caught:
        select_features(["computed.orders_30d", "email", "computed.orders_30d"])
    fields = [v.field for v in caught.value.field_violations]
    assert fields == ["features[1]", "features[2]"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e3, 1e3, allow_nan=False)),
        min_size=2,
        max_size=30,
    )
)
def test_preprocessing_inverse_undoes_transform(rows: list[tuple[float, float]]) -> None:
    raw = np.asarray(rows, dtype=np.float64)
    shaped = np.column_stack([np.sign(raw[:, 0]) * np.log1p(np.abs(raw[:, 0])), raw[:, 1]])
    scales = shaped.std(axis=0)
    preprocessing = Preprocessing(
        features=("computed.revenue_30d.amount", "computed.engagement_rate_30d"),
        medians=(0.0, 0.0),
        log_scaled=(True, False),
        means=tuple(shaped.mean(axis=0).tolist()),
        scales=tuple(float(s) if s > 0 else 1.0 for s in scales),
    )
    back = preprocessing.inverse(preprocessing.transform(raw))
    assert back == pytest.approx(raw, rel=1e-6, abs=1e-6)


# --- edge cases -----------------------------------------------------------------------------


def test_no_profiles_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        vectorize({}, now=NOW)
    assert caught.value.field_violations[0].field == "profiles"


def test_fewer_distinct_profiles_than_k_is_a_failed_precondition() -> None:
    profiles = {
        "a": {"computed.orders_lifetime": 1},
        "b": {"computed.orders_lifetime": 5},
    }
    matrix = vectorize(profiles, ("computed.orders_lifetime",), now=NOW)
    with pytest.raises(FailedPrecondition) as caught:
        discover(matrix, (2, 4))
    assert caught.value.field_violations[0].field == "k_min"


def test_k_max_is_lowered_to_what_the_profiles_support() -> None:
    profiles = {
        s: {"computed.orders_lifetime": n}
        for s, n in zip("abcdef", [1, 1, 2, 8, 30, 31], strict=True)
    }
    discovery = discover(vectorize(profiles, ("computed.orders_lifetime",), now=NOW), (2, 8))
    # Five distinct values: at most four clusters.
    assert [s.k for s in discovery.scores] == [2, 3, 4]


def test_identical_profiles_are_a_failed_precondition() -> None:
    profiles = {
        f"s{i}": {"computed.orders_lifetime": 3, "last_seen": "2026-05-01T00:00:00Z"}
        for i in range(20)
    }
    matrix = vectorize(profiles, ("computed.orders_lifetime", "days_since_last_seen"), now=NOW)
    assert matrix.constant_features == matrix.features
    with pytest.raises(FailedPrecondition) as caught:
        discover(matrix)
    assert caught.value.field_violations[0].field == "features"


def test_a_constant_feature_is_reported_and_never_distinguishes() -> None:
    profiles, _ = _population({"casual": 60, "lapsed": 60}, seed=2)
    for traits in profiles.values():
        traits["computed.refunds_lifetime"] = 0
    discovery = discover(vectorize(profiles, now=NOW), (2, 4), seed=1)
    assert discovery.constant_features == ("computed.refunds_lifetime",)
    assert discovery.k == 2
    for cluster in discovery.clusters:
        assert "computed.refunds_lifetime" not in {f.feature for f in cluster.features}


@pytest.mark.parametrize(
    ("k_range", "field"),
    [((1, 4), "k_min"), ((5, 4), "k_max"), ((2, 51), "k_max")],
)
def test_bad_k_range_is_an_invalid_argument(k_range: tuple[int, int], field: str) -> None:
    profiles, _ = _population({"casual": 10, "lapsed": 10})
    with pytest.raises(InvalidArgument) as caught:
        discover(vectorize(profiles, now=NOW), k_range)
    assert [v.field for v in caught.value.field_violations] == [field]


def test_any_int64_seed_is_accepted() -> None:
    profiles, _ = _population({"casual": 30, "lapsed": 30})
    matrix = vectorize(profiles, now=NOW)
    assert (
        discover(matrix, (2, 3), seed=-(2**63)).labels
        == discover(matrix, (2, 3), seed=-(2**63)).labels
    )


def test_label_of_a_cluster_close_to_average() -> None:
    weak = [ClusterFeature("computed.orders_30d", 1.0, 1.0, 0.1)]
    assert cluster_label(weak) == "close to the population average"
    strong = [
        ClusterFeature("computed.orders_lifetime", 9.0, 2.0, 1.8),
        ClusterFeature("days_since_last_seen", 2.0, 20.0, -1.2),
        ClusterFeature("computed.sessions_30d", 9.0, 2.0, 0.9),
    ]
    assert cluster_label(strong) == "higher computed.orders_lifetime, lower days_since_last_seen"
