"""Segment discovery: K-Means on standardized behavioural vectors, k chosen by silhouette.

Profiles arrive as flat, non-personal trait maps (``computed.orders_lifetime``,
``last_seen``, ...). :func:`vectorize` turns them into a matrix, :func:`discover` clusters
it and describes every cluster, and the resulting :class:`ClusterModel` (JSON-serialisable)
lets :func:`assign` place a new subject in real time, so that a promoted cluster can be
evaluated like any other segment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans  # type: ignore[import-untyped]
from sklearn.metrics import silhouette_score  # type: ignore[import-untyped]
from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

from tailor_core.errors import DomainError, FailedPrecondition, FieldViolation, InvalidArgument

FloatMatrix = npt.NDArray[np.float64]

#: Recency-style features derived from a timestamp trait: feature name -> source trait.
#: Their value is the age of the timestamp at ``now``, in days.
DERIVED_AGE_FEATURES: Mapping[str, str] = {
    "days_since_last_seen": "last_seen",
    "days_since_first_seen": "first_seen",
    "days_since_last_order": "computed.last_order_at",
}

#: Counts and money amounts: right-skewed (most profiles have a few, a handful have
#: thousands), so they are log-scaled before standardizing. Without it a few whales would
#: own whole clusters and squash everyone else into one.
HEAVY_TAILED_FEATURES: frozenset[str] = frozenset(
    {
        "computed.sessions_30d",
        "computed.sessions_lifetime",
        "computed.orders_30d",
        "computed.orders_lifetime",
        "computed.revenue_30d.amount",
        "computed.revenue_lifetime.amount",
        "computed.average_order_value.amount",
        "computed.refunds_lifetime",
        "computed.social_engagements_30d",
        "computed.support.interactions_30d",
        "computed.support.interactions_lifetime",
        "computed.open_cart.items",
        "computed.open_cart.value.amount",
    }
)

#: Bounded scores and rates, used as they are.
BOUNDED_FEATURES: frozenset[str] = frozenset(
    {
        "computed.engagement_rate_30d",
        "computed.rfm.recency",
        "computed.rfm.frequency",
        "computed.rfm.monetary",
        "computed.support.average_satisfaction",
    }
)

#: The default vector: recency, frequency, monetary, sessions, engagement, refunds, social
#: and support activity. RFM quintiles are left out because they restate orders, revenue and
#: recency and would weigh those twice.
BEHAVIOURAL_FEATURES: tuple[str, ...] = (
    "days_since_last_seen",
    "computed.sessions_30d",
    "computed.sessions_lifetime",
    "computed.engagement_rate_30d",
    "computed.orders_30d",
    "computed.orders_lifetime",
    "computed.revenue_30d.amount",
    "computed.revenue_lifetime.amount",
    "computed.average_order_value.amount",
    "computed.refunds_lifetime",
    "computed.social_engagements_30d",
    "computed.support.interactions_lifetime",
)

_EVENT_COUNT_PREFIX = "computed.event_counts."
_EVENT_COUNT_WINDOWS = (".last_7d", ".last_30d", ".lifetime")

DEFAULT_K_RANGE = (2, 8)
MAX_K = 50
#: Rows the silhouette is computed on: it costs O(rows²), so beyond this a seeded sample
#: (the same one for every k, so the scores stay comparable) stands in for the whole.
DEFAULT_SILHOUETTE_SAMPLE = 2000
#: K-Means restarts per k; fixed so that a seed alone decides the result.
N_INIT = 10
DEFAULT_TOP_FEATURES = 4
#: Features weaker than this (in population standard deviations) do not name a cluster.
LABEL_MIN_Z = 0.25
LABEL_PARTS = 2
MODEL_FORMAT = 1

_SECONDS_PER_DAY = 86_400.0


# --- features ---------------------------------------------------------------------------


def is_event_count(feature: str) -> bool:
    """Whether ``feature`` is a ``computed.event_counts.<event>.<window>`` figure."""
    if not feature.startswith(_EVENT_COUNT_PREFIX):
        return False
    rest = feature[len(_EVENT_COUNT_PREFIX) :]
    return any(rest.endswith(w) and len(rest) > len(w) for w in _EVENT_COUNT_WINDOWS)


def is_clusterable(feature: str) -> bool:
    """Whether ``feature`` names a numeric behavioural figure that can be clustered on."""
    return (
        feature in DERIVED_AGE_FEATURES
        or feature in HEAVY_TAILED_FEATURES
        or feature in BOUNDED_FEATURES
        or is_event_count(feature)
    )


def is_log_scaled(feature: str) -> bool:
    return feature in HEAVY_TAILED_FEATURES or is_event_count(feature)


def select_features(requested: Sequence[str]) -> tuple[str, ...]:
    """The features of a run: ``requested`` (RunClusteringRequest.features) or the default.

    Raises InvalidArgument with a ``features[i]`` field for an unknown or repeated name.
    """
    if not requested:
        return BEHAVIOURAL_FEATURES
    violations = []
    seen: set[str] = set()
    for index, name in enumerate(requested):
        if not is_clusterable(name):
            violations.append(
                FieldViolation(
                    f"features[{index}]",
                    f"{name!r} is not a numeric behavioural trait",
                    "UNKNOWN_FEATURE",
                )
            )
        elif name in seen:
            violations.append(
                FieldViolation(f"features[{index}]", f"{name!r} is repeated", "DUPLICATE_FEATURE")
            )
        seen.add(name)
    if violations:
        raise InvalidArgument("unknown or repeated clustering features", violations)
    return tuple(requested)


def _number(value: Any) -> float | None:
    """A finite float from a trait value (money amounts arrive as decimal strings)."""
    if isinstance(value, bool):  # a flag is not a magnitude
        return None
    if isinstance(value, int | float | Decimal):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_timestamp(value: Any) -> datetime | None:
    """An aware datetime from an RFC 3339 string (naive means UTC), or None."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def feature_value(traits: Mapping[str, Any], feature: str, now: datetime) -> float | None:
    """The raw value of ``feature`` for one subject, in original units; None when unknown."""
    source = DERIVED_AGE_FEATURES.get(feature)
    if source is not None:
        moment = parse_timestamp(traits.get(source))
        if moment is None:
            return None
        # A clock slightly ahead of ours must not make anyone "more recent than now".
        return max(0.0, (now - moment).total_seconds() / _SECONDS_PER_DAY)
    value = _number(traits.get(feature))
    if value is None and is_event_count(feature):
        # The profile lists only events that happened: absent means none, not unknown.
        return 0.0
    return value


def _signed_log1p(values: FloatMatrix) -> FloatMatrix:
    # Net revenue can be negative after refunds; the signed form keeps log1p defined.
    return np.sign(values) * np.log1p(np.abs(values))


def _signed_expm1(values: FloatMatrix) -> FloatMatrix:
    return np.sign(values) * np.expm1(np.abs(values))


def _apply_to_columns(
    values: FloatMatrix, columns: Sequence[bool], function: Callable[[FloatMatrix], FloatMatrix]
) -> FloatMatrix:
    """``values`` with ``function`` applied to the chosen columns only (the others could
    overflow under it)."""
    result = np.array(values, dtype=np.float64)
    mask = np.asarray(columns, dtype=bool)
    result[:, mask] = function(result[:, mask])
    return result


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """What turns raw trait values into a standardized vector, fitted on one population.

    ``medians`` are in original units (they fill missing values); ``means`` and ``scales``
    are the StandardScaler's, on the log-scaled values where ``log_scaled`` says so.
    """

    features: tuple[str, ...]
    medians: tuple[float, ...]
    log_scaled: tuple[bool, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]

    def impute(self, raw: FloatMatrix) -> FloatMatrix:
        """``raw`` (rows x features, NaN for missing) with missing values set to medians."""
        return np.where(np.isnan(raw), np.asarray(self.medians), raw)

    def transform(self, imputed: FloatMatrix) -> FloatMatrix:
        """Imputed original units -> standardized space."""
        shaped = _apply_to_columns(imputed, self.log_scaled, _signed_log1p)
        return np.asarray((shaped - np.asarray(self.means)) / np.asarray(self.scales))

    def inverse(self, standardized: FloatMatrix) -> FloatMatrix:
        """Standardized space -> original units."""
        shaped = standardized * np.asarray(self.scales) + np.asarray(self.means)
        return _apply_to_columns(shaped, self.log_scaled, _signed_expm1)


@dataclass(frozen=True)
class FeatureMatrix:
    """Profiles as vectors: one row per subject (sorted by id, so runs are reproducible)."""

    subject_ids: tuple[str, ...]
    #: Imputed values in original units (rows x features).
    raw: FloatMatrix
    #: The same, log-scaled where heavy-tailed and standardized (rows x features).
    standardized: FloatMatrix
    preprocessing: Preprocessing

    @property
    def features(self) -> tuple[str, ...]:
        return self.preprocessing.features

    @property
    def constant_features(self) -> tuple[str, ...]:
        """Features with one value across the population: they cannot tell clusters apart."""
        if len(self.subject_ids) == 0:
            return self.features
        spread = np.ptp(self.raw, axis=0)
        return tuple(f for f, s in zip(self.features, spread, strict=True) if s == 0)


def _raw_rows(
    profiles: Mapping[str, Mapping[str, Any]],
    subject_ids: Sequence[str],
    features: Sequence[str],
    now: datetime,
) -> FloatMatrix:
    rows = [
        [_nan_if_none(feature_value(profiles[s], f, now)) for f in features] for s in subject_ids
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(subject_ids), len(features))


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _column_medians(raw: FloatMatrix) -> tuple[float, ...]:
    medians = []
    for column in raw.T:
        known = column[~np.isnan(column)]
        # A feature nobody has gets 0: it is then constant and simply carries no weight.
        medians.append(float(np.median(known)) if known.size else 0.0)
    return tuple(medians)


def vectorize(
    profiles: Mapping[str, Mapping[str, Any]],
    features: Sequence[str] = BEHAVIOURAL_FEATURES,
    *,
    now: datetime,
) -> FeatureMatrix:
    """Fit the preprocessing on ``profiles`` (subject id -> flat traits) and apply it.

    Missing values take the feature's median; ``days_since_*`` features are ages in days at
    ``now``; counts and money are log1p-scaled; then every column is standardized.
    Raises FailedPrecondition (field ``profiles``) when there are no profiles.
    """
    if not profiles:
        raise FailedPrecondition(
            "no profiles to cluster",
            [FieldViolation("profiles", "no profiles with consent", "TOO_FEW_PROFILES")],
        )
    features = tuple(features)
    subject_ids = tuple(sorted(profiles))
    raw = _raw_rows(profiles, subject_ids, features, now)
    medians = _column_medians(raw)
    log_scaled = tuple(is_log_scaled(f) for f in features)
    imputed = np.where(np.isnan(raw), np.asarray(medians), raw)
    shaped = _apply_to_columns(imputed, log_scaled, _signed_log1p)
    # A constant column has variance 0; StandardScaler then uses scale 1 (column becomes 0).
    scaler = StandardScaler().fit(shaped)
    preprocessing = Preprocessing(
        features=features,
        medians=medians,
        log_scaled=log_scaled,
        means=tuple(float(m) for m in scaler.mean_),
        scales=tuple(float(s) for s in scaler.scale_),
    )
    return FeatureMatrix(
        subject_ids=subject_ids,
        raw=imputed,
        standardized=preprocessing.transform(imputed),
        preprocessing=preprocessing,
    )


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterModel:
    """Everything :func:`assign` needs, storable as JSON: preprocessing and centroids.

    ``centroids[i]`` is cluster ``i``'s centre in standardized space.
    """

    preprocessing: Preprocessing
    centroids: tuple[tuple[float, ...], ...]

    @property
    def features(self) -> tuple[str, ...]:
        return self.preprocessing.features

    def to_json(self) -> str:
        p = self.preprocessing
        # Python writes floats with repr, so a round trip restores them exactly; NaN would
        # not be JSON (Postgres jsonb refuses it), so it fails here rather than there.
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "features": list(p.features),
                "medians": list(p.medians),
                "log_scaled": list(p.log_scaled),
                "means": list(p.means),
                "scales": list(p.scales),
                "centroids": [list(c) for c in self.centroids],
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterModel:
        """Parse :meth:`to_json` output; raises DomainError (INTERNAL) if it is malformed."""
        try:
            data = json.loads(text)
            if data["format"] != MODEL_FORMAT:
                raise ValueError(f"unknown model format {data['format']!r}")
            model = cls(
                preprocessing=Preprocessing(
                    features=tuple(str(f) for f in data["features"]),
                    medians=tuple(float(v) for v in data["medians"]),
                    log_scaled=tuple(bool(v) for v in data["log_scaled"]),
                    means=tuple(float(v) for v in data["means"]),
                    scales=tuple(float(v) for v in data["scales"]),
                ),
                centroids=tuple(tuple(float(v) for v in c) for c in data["centroids"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise DomainError(f"stored cluster model is malformed: {error}") from error
        model._check_shape()
        return model

    def _check_shape(self) -> None:
        p = self.preprocessing
        width = len(p.features)
        lengths = {len(p.medians), len(p.log_scaled), len(p.means), len(p.scales)}
        lengths |= {len(c) for c in self.centroids}
        if lengths != {width} or not self.centroids:
            raise DomainError("stored cluster model is malformed: inconsistent dimensions")


def assign(model: ClusterModel, traits: Mapping[str, Any], now: datetime) -> int:
    """The cluster id (0..k-1) whose centroid is nearest to a subject's traits at ``now``.

    Missing traits take the fitted medians, as they did when the model was fitted.
    """
    p = model.preprocessing
    raw = np.asarray([[_nan_if_none(feature_value(traits, f, now)) for f in p.features]])
    point = p.transform(p.impute(raw))[0]
    distances = ((np.asarray(model.centroids) - point) ** 2).sum(axis=1)
    return int(np.argmin(distances))  # ties go to the lower id


# --- discovery ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KScore:
    """Mean silhouette coefficient (-1..1) of the clustering with ``k`` clusters."""

    k: int
    silhouette: float


@dataclass(frozen=True, slots=True)
class ClusterFeature:
    """How a cluster differs from the population on one feature.

    Means are arithmetic, in original units; ``z_score`` is the cluster centroid's distance
    from the population mean in population standard deviations, measured on the scale the
    clustering used (log for counts and money), so a few outliers cannot inflate it.
    """

    feature: str
    cluster_mean: float
    population_mean: float
    z_score: float

    @property
    def direction(self) -> str:
        return "higher" if self.z_score > 0 else "lower"


@dataclass(frozen=True)
class Cluster:
    """One discovered cluster; ids run from 0 (the largest) to k-1."""

    cluster_id: int
    size: int
    #: size / profiles clustered, 0..1.
    share: float
    #: The K-Means centre mapped back to original units (feature -> value).
    centroid: Mapping[str, float]
    #: Most distinguishing features, strongest first.
    features: tuple[ClusterFeature, ...]
    label: str


@dataclass(frozen=True)
class Discovery:
    """The outcome of one discovery run."""

    k: int
    silhouette: float
    #: Silhouette of every k tried, by k.
    scores: tuple[KScore, ...]
    clusters: tuple[Cluster, ...]
    subject_ids: tuple[str, ...]
    #: Cluster id of each subject, aligned with ``subject_ids``.
    labels: tuple[int, ...]
    features: tuple[str, ...]
    seed: int
    model: ClusterModel
    #: Features that were the same for everyone and so played no part.
    constant_features: tuple[str, ...] = field(default=())

    @property
    def profiles(self) -> int:
        return len(self.subject_ids)

    def members(self, cluster_id: int) -> frozenset[str]:
        return frozenset(
            s for s, c in zip(self.subject_ids, self.labels, strict=True) if c == cluster_id
        )


def validate_k_range(k_range: tuple[int, int]) -> tuple[int, int]:
    """``k_range`` checked: 2 <= k_min <= k_max <= 50; raises InvalidArgument otherwise."""
    k_min, k_max = k_range
    violations = []
    if k_min < 2:
        violations.append(FieldViolation("k_min", "must be at least 2", "K_TOO_SMALL"))
    if k_max < k_min:
        violations.append(FieldViolation("k_max", "must be at least k_min", "K_RANGE_EMPTY"))
    if k_max > MAX_K:
        violations.append(FieldViolation("k_max", f"must be at most {MAX_K}", "K_TOO_LARGE"))
    if violations:
        raise InvalidArgument("invalid k range", violations)
    return k_min, k_max


def random_state(seed: int) -> int:
    """The int64 run seed folded into the 32-bit range scikit-learn and NumPy accept."""
    return seed % 2**32


def _feasible_k_max(matrix: FeatureMatrix, k_min: int, k_max: int) -> int:
    """The largest k worth trying: silhouette needs fewer clusters than distinct points."""
    distinct = len(np.unique(matrix.standardized, axis=0))
    if distinct == 1:
        raise FailedPrecondition(
            "every profile has the same feature values; there is nothing to cluster",
            [FieldViolation("features", "identical for every profile", "NO_VARIATION")],
        )
    if distinct - 1 < k_min:
        raise FailedPrecondition(
            f"{distinct} distinct profiles cannot form more than {distinct - 1} clusters",
            [
                FieldViolation(
                    "k_min", f"at most {distinct - 1} for these profiles", "TOO_FEW_PROFILES"
                )
            ],
        )
    return min(k_max, distinct - 1)


def _silhouette_sample(rows: int, sample_size: int, seed: int) -> npt.NDArray[np.intp] | None:
    if rows <= sample_size:
        return None
    generator = np.random.default_rng(random_state(seed))
    return np.sort(generator.choice(rows, size=sample_size, replace=False))


def _silhouette(
    points: FloatMatrix, labels: npt.NDArray[np.intp], sample: npt.NDArray[np.intp] | None
) -> float:
    if sample is not None:
        points, labels = points[sample], labels[sample]
    distinct = len(np.unique(labels))
    if distinct < 2 or distinct >= len(labels):
        return -1.0  # undefined: rank it below every real score
    return float(silhouette_score(points, labels))


def _fit(points: FloatMatrix, k: int, seed: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=N_INIT, random_state=random_state(seed)).fit(points)


def _order_by_size(labels: npt.NDArray[np.intp], k: int) -> npt.NDArray[np.intp]:
    """Old id -> new id, largest cluster first (ties by old id), so ids read meaningfully."""
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda old: (-sizes[old], old))
    mapping = np.empty(k, dtype=np.intp)
    for new, old in enumerate(order):
        mapping[old] = new
    return mapping


def discover(
    matrix: FeatureMatrix,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    *,
    seed: int = 0,
    sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
    top_features: int = DEFAULT_TOP_FEATURES,
) -> Discovery:
    """Cluster ``matrix`` with K-Means for each k in ``k_range`` (inclusive) and keep the k
    with the best silhouette (the smaller k on a tie). Deterministic for a seed.

    k_max is lowered to what the data can support. Raises InvalidArgument for a bad range,
    FailedPrecondition when the profiles are too few or all alike.
    """
    k_min, k_max = validate_k_range(k_range)
    k_max = _feasible_k_max(matrix, k_min, k_max)
    points = matrix.standardized
    sample = _silhouette_sample(len(points), sample_size, seed)
    scores: list[KScore] = []
    best: tuple[float, KMeans] | None = None
    for k in range(k_min, k_max + 1):
        fitted = _fit(points, k, seed)
        score = _silhouette(points, np.asarray(fitted.labels_, dtype=np.intp), sample)
        scores.append(KScore(k, score))
        if best is None or score > best[0]:
            best = (score, fitted)
    assert best is not None  # the range holds at least k_min
    silhouette, fitted = best
    k = int(fitted.n_clusters)
    mapping = _order_by_size(np.asarray(fitted.labels_, dtype=np.intp), k)
    labels = mapping[np.asarray(fitted.labels_, dtype=np.intp)]
    centres = np.empty_like(fitted.cluster_centers_)
    centres[mapping] = fitted.cluster_centers_
    clusters = tuple(
        _describe(matrix, labels, centres, cluster_id, top_features) for cluster_id in range(k)
    )
    return Discovery(
        k=k,
        silhouette=silhouette,
        scores=tuple(scores),
        clusters=clusters,
        subject_ids=matrix.subject_ids,
        labels=tuple(int(c) for c in labels),
        features=matrix.features,
        seed=seed,
        model=ClusterModel(
            preprocessing=matrix.preprocessing,
            centroids=tuple(tuple(float(v) for v in c) for c in centres),
        ),
        constant_features=matrix.constant_features,
    )


def _describe(
    matrix: FeatureMatrix,
    labels: npt.NDArray[np.intp],
    centres: FloatMatrix,
    cluster_id: int,
    top_features: int,
) -> Cluster:
    inside = labels == cluster_id
    size = int(inside.sum())
    cluster_means = matrix.raw[inside].mean(axis=0)
    population_means = matrix.raw.mean(axis=0)
    # In standardized space the population mean is 0 and its deviation 1, so the centre's
    # coordinates are already z-scores.
    z_scores = centres[cluster_id]
    ranked = sorted(
        (i for i in range(len(matrix.features)) if z_scores[i] != 0),
        key=lambda i: (-abs(z_scores[i]), matrix.features[i]),
    )
    distinguishing = tuple(
        ClusterFeature(
            feature=matrix.features[i],
            cluster_mean=float(cluster_means[i]),
            population_mean=float(population_means[i]),
            z_score=float(z_scores[i]),
        )
        for i in ranked[:top_features]
    )
    centroid = matrix.preprocessing.inverse(centres[cluster_id : cluster_id + 1])[0]
    return Cluster(
        cluster_id=cluster_id,
        size=size,
        share=size / len(labels),
        centroid={f: float(v) for f, v in zip(matrix.features, centroid, strict=True)},
        features=distinguishing,
        label=cluster_label(distinguishing),
    )


def cluster_label(features: Sequence[ClusterFeature]) -> str:
    """A readable name from the strongest features, e.g.
    ``"higher computed.orders_lifetime, lower days_since_last_seen"``."""
    notable = [f for f in features if abs(f.z_score) >= LABEL_MIN_Z][:LABEL_PARTS]
    if not notable:
        return "close to the population average"
    return ", ".join(f"{f.direction} {f.feature}" for f in notable)
