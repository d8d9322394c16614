"""Segment audits: sizes, overlaps, warnings, composition against the population, freshness.

Everything here works on member sets (segment id -> subject ids) and flat, non-personal
trait maps (subject id -> traits); the service loads both and converts the result.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

import numpy as np

from tailor_core.errors import FieldViolation, InvalidArgument
from tailor_segment.domain.clustering import parse_timestamp

UNKNOWN = "unknown"
AGE_ATTRIBUTE = "demographics.age"

#: Compared with the population when the request names no attribute (age is banded).
DEFAULT_ATTRIBUTES: tuple[str, ...] = (
    AGE_ATTRIBUTE,
    "demographics.gender",
    "demographics.country",
)

#: Non-personal, categorical traits a composition may be computed on.
COMPOSITION_ATTRIBUTES: frozenset[str] = frozenset(
    {
        AGE_ATTRIBUTE,
        "demographics.gender",
        "demographics.country",
        "demographics.language",
        "context.country",
        "context.locale",
        "computed.rfm.label",
        "computed.last_context.device_type",
        "computed.last_context.channel",
        "computed.last_context.location.country",
    }
)

#: Lower bounds of the age bands, in years; the last band is open-ended.
AGE_BANDS: tuple[int, ...] = (18, 25, 35, 45, 55, 65)

_SECONDS_PER_DAY = 86_400.0


class AuditWarningKind(IntEnum):
    """Mirrors tailor.segment.v1.AuditWarningKind (same numbers)."""

    TINY_SEGMENT = 1
    NEAR_DUPLICATE = 2
    SKEWED_COMPOSITION = 3
    STALE_MEMBERS = 4
    EMPTY_SEGMENT = 5
    #: Not in the proto yet: more segments than the population can meaningfully hold.
    OVER_SEGMENTATION = 6


@dataclass(frozen=True, slots=True)
class AuditThresholds:
    """When an audit warns or flags. Defaults are those of AuditSegmentsRequest's zero values,
    except where noted. Raises InvalidArgument (naming the field) for a value out of range.
    """

    #: Segments with fewer members than this are tiny.
    tiny_segment_size: int = 50
    #: ... and so are segments holding less than this share of their population.
    tiny_segment_share: float = 0.001
    #: Pairs at least this alike (Jaccard) are near-duplicates.
    near_duplicate_jaccard: float = 0.9
    #: Representation ratios outside [1/threshold, threshold] are flagged. The default is the
    #: four-fifths rule of adverse-impact analysis: a group at under 80 % of its expected rate
    #: (or, symmetrically, over 125 %) is treated as materially skewed.
    representation_threshold: float = 1.25
    #: A value is flagged only with at least this many members observed or expected in the
    #: segment: below that, a ratio is mostly noise.
    min_representation_count: int = 10
    #: Members whose latest event is older than this are stale.
    stale_after: timedelta = timedelta(days=30)
    #: Warn when at least this share of a segment's members is stale.
    stale_warning_share: float = 0.5
    #: Warn about over-segmentation when there are fewer subjects than this per segment.
    min_population_per_segment: int = 100

    def __post_init__(self) -> None:
        violations = [
            FieldViolation(name, description, "OUT_OF_RANGE")
            for name, bad, description in (
                ("tiny_segment_size", self.tiny_segment_size < 0, "must not be negative"),
                ("tiny_segment_share", not 0 <= self.tiny_segment_share <= 1, "must be 0..1"),
                (
                    "near_duplicate_jaccard",
                    not 0 < self.near_duplicate_jaccard <= 1,
                    "must be in (0, 1]",
                ),
                (
                    "representation_threshold",
                    not self.representation_threshold > 1,
                    "must be greater than 1",
                ),
                (
                    "min_representation_count",
                    self.min_representation_count < 0,
                    "must not be negative",
                ),
                ("stale_after", self.stale_after <= timedelta(0), "must be positive"),
                ("stale_warning_share", not 0 < self.stale_warning_share <= 1, "must be (0, 1]"),
                (
                    "min_population_per_segment",
                    self.min_population_per_segment < 0,
                    "must not be negative",
                ),
            )
            if bad
        ]
        if violations:
            raise InvalidArgument("invalid audit thresholds", violations)


DEFAULT_THRESHOLDS = AuditThresholds()


def validate_attributes(requested: Sequence[str]) -> tuple[str, ...]:
    """The attributes of an audit: ``requested`` or the defaults; raises InvalidArgument
    with an ``attributes[i]`` field for a name that is not a categorical non-personal trait.
    """
    if not requested:
        return DEFAULT_ATTRIBUTES
    violations = [
        FieldViolation(
            f"attributes[{index}]", f"{name!r} is not a demographic attribute", "UNKNOWN_ATTRIBUTE"
        )
        for index, name in enumerate(requested)
        if name not in COMPOSITION_ATTRIBUTES
    ]
    if violations:
        raise InvalidArgument("unknown audit attributes", violations)
    return tuple(dict.fromkeys(requested))


# --- sizes and overlaps ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two segments' common members (``a`` < ``b``)."""

    a: str
    b: str
    both: int
    #: Common members over members of either, 0..1.
    jaccard: float
    #: Common members over the smaller size, 0..1: 1 when the smaller lies inside the other.
    share_of_smaller: float


def overlap(a: str, a_members: Set[str], b: str, b_members: Set[str]) -> Overlap:
    both = len(a_members & b_members)
    union = len(a_members) + len(b_members) - both
    smaller = min(len(a_members), len(b_members))
    return Overlap(
        a=a,
        b=b,
        both=both,
        jaccard=both / union if union else 0.0,
        share_of_smaller=both / smaller if smaller else 0.0,
    )


def overlaps(members: Mapping[str, Set[str]]) -> list[Overlap]:
    """Every pair of segments with at least one common member, by (a, b)."""
    pairs = itertools.combinations(sorted(members), 2)
    found = (overlap(a, members[a], b, members[b]) for a, b in pairs)
    return [o for o in found if o.both > 0]


# --- composition ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Representation:
    """How one attribute value is represented in a segment compared with its population."""

    attribute: str
    value: str
    segment_count: int
    population_count: int
    #: 0..1.
    segment_share: float
    #: 0..1.
    population_share: float
    #: segment_share / population_share.
    ratio: float
    flagged: bool


def age_band(age: Any) -> str:
    """``"25-34"``-style band of an age in years; ``"unknown"`` for a missing or bad one."""
    if isinstance(age, bool) or not isinstance(age, int | float | str):
        return UNKNOWN
    try:
        years = float(age)
    except ValueError:
        return UNKNOWN
    if not math.isfinite(years) or years < 0:
        return UNKNOWN
    if years < AGE_BANDS[0]:
        return f"under {AGE_BANDS[0]}"
    for lower, upper in itertools.pairwise(AGE_BANDS):
        if years < upper:
            return f"{lower}-{upper - 1}"
    return f"{AGE_BANDS[-1]}+"


def attribute_value(traits: Mapping[str, Any] | None, attribute: str) -> str:
    """The value of ``attribute`` as compared: ages banded, missing ones ``"unknown"``."""
    value = None if traits is None else traits.get(attribute)
    if attribute == AGE_ATTRIBUTE:
        return age_band(value)
    if value is None or value == "":
        return UNKNOWN
    return str(value)


PopulationCounts = Mapping[str, Counter[str]]


def population_counts(
    population: Mapping[str, Mapping[str, Any]], attributes: Sequence[str]
) -> dict[str, Counter[str]]:
    """Subjects per attribute value in ``population``: attribute -> value -> count."""
    return {
        attribute: Counter(attribute_value(t, attribute) for t in population.values())
        for attribute in attributes
    }


def composition(
    segment: Collection[str],
    population: Mapping[str, Mapping[str, Any]],
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    thresholds: AuditThresholds = DEFAULT_THRESHOLDS,
    counts: PopulationCounts | None = None,
) -> list[Representation]:
    """Representation of every attribute value seen in ``population`` (subject -> traits),
    by attribute then value. Only members that are in the population are counted, so both
    shares have the same footing. ``counts`` (from :func:`population_counts`) saves
    recounting a population shared by many segments.
    """
    if counts is None:
        counts = population_counts(population, attributes)
    counted = [s for s in segment if s in population]
    result: list[Representation] = []
    for attribute in attributes:
        in_population = counts[attribute]
        in_segment = Counter(attribute_value(population[s], attribute) for s in counted)
        for value in sorted(in_population):
            result.append(
                _represent(
                    attribute,
                    value,
                    in_segment[value],
                    len(counted),
                    in_population[value],
                    len(population),
                    thresholds,
                )
            )
    return result


def _represent(
    attribute: str,
    value: str,
    segment_count: int,
    segment_size: int,
    population_count: int,
    population_size: int,
    thresholds: AuditThresholds,
) -> Representation:
    segment_share = segment_count / segment_size if segment_size else 0.0
    population_share = population_count / population_size  # > 0: the value was seen there
    ratio = segment_share / population_share
    expected = segment_size * population_share
    supported = max(segment_count, expected) >= thresholds.min_representation_count
    limit = thresholds.representation_threshold
    skewed = not (1 / limit <= ratio <= limit)
    return Representation(
        attribute=attribute,
        value=value,
        segment_count=segment_count,
        population_count=population_count,
        segment_share=segment_share,
        population_share=population_share,
        ratio=ratio,
        flagged=segment_size > 0 and supported and skewed,
    )


# --- freshness ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Freshness:
    """Age of members' latest event (``last_seen``) at the audit time.

    Members without a readable ``last_seen`` count as stale and are left out of the
    percentiles (they have no age to rank).
    """

    members: int
    unknown: int
    stale: int
    median_age_seconds: float
    p90_age_seconds: float

    @property
    def stale_share(self) -> float:
        return self.stale / self.members if self.members else 0.0

    @property
    def median_age_days(self) -> float:
        return self.median_age_seconds / _SECONDS_PER_DAY

    @property
    def p90_age_days(self) -> float:
        return self.p90_age_seconds / _SECONDS_PER_DAY


def freshness(
    last_seen: Iterable[Any], now: datetime, stale_after: timedelta = timedelta(days=30)
) -> Freshness:
    """Freshness of members from their ``last_seen`` values (RFC 3339 strings or None).

    Percentiles interpolate linearly between ranks; a ``last_seen`` ahead of ``now``
    (clock skew) counts as age 0.
    """
    values = list(last_seen)
    moments = [parse_timestamp(v) for v in values]
    ages = np.asarray(
        [max(0.0, (now - m).total_seconds()) for m in moments if m is not None], dtype=np.float64
    )
    unknown = len(values) - len(ages)
    stale = unknown + int((ages > stale_after.total_seconds()).sum())
    return Freshness(
        members=len(values),
        unknown=unknown,
        stale=stale,
        median_age_seconds=float(np.median(ages)) if ages.size else 0.0,
        p90_age_seconds=float(np.percentile(ages, 90)) if ages.size else 0.0,
    )


# --- the audit ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentAudit:
    segment_id: str
    size: int
    #: Subjects the composition compares with (profiles with consent for its purpose).
    population: int
    composition: tuple[Representation, ...]
    freshness: Freshness

    @property
    def share_of_population(self) -> float:
        return self.size / self.population if self.population else 0.0

    @property
    def stale_member_share(self) -> float:
        return self.freshness.stale_share

    @property
    def median_data_age_seconds(self) -> float:
        return self.freshness.median_age_seconds


@dataclass(frozen=True, slots=True)
class AuditWarning:
    kind: AuditWarningKind
    segment_ids: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class AuditReport:
    segments: tuple[SegmentAudit, ...]
    overlaps: tuple[Overlap, ...]
    warnings: tuple[AuditWarning, ...]
    computed_at: datetime
    #: Subjects in the union of the populations.
    population: int = field(default=0)


def audit_segments(
    members: Mapping[str, Set[str]],
    population: Mapping[str, Mapping[str, Any]],
    *,
    now: datetime,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    thresholds: AuditThresholds = DEFAULT_THRESHOLDS,
    populations: Mapping[str, Set[str]] | None = None,
) -> AuditReport:
    """Audit ``members`` (segment id -> subject ids) against ``population`` (subject id ->
    flat traits, for every subject any audited segment is compared with).

    ``populations`` optionally narrows each segment's population (e.g. to subjects with
    consent for its purpose); by default every segment compares with all of ``population``.
    """
    audits = []
    # Counting a population is the costly part; segments sharing one (the same set object,
    # e.g. one per purpose) share its counts.
    cache: dict[int, tuple[Mapping[str, Mapping[str, Any]], PopulationCounts]] = {}
    for segment_id in sorted(members):
        key = id(populations[segment_id]) if populations and segment_id in populations else 0
        if key not in cache:
            own = _population_of(segment_id, population, populations)
            cache[key] = (own, population_counts(own, attributes))
        own, counts = cache[key]
        segment = members[segment_id]
        audits.append(
            SegmentAudit(
                segment_id=segment_id,
                size=len(segment),
                population=len(own),
                composition=tuple(composition(segment, own, attributes, thresholds, counts)),
                freshness=freshness(
                    (population.get(s, {}).get("last_seen") for s in sorted(segment)),
                    now,
                    thresholds.stale_after,
                ),
            )
        )
    pairs = overlaps(members)
    return AuditReport(
        segments=tuple(audits),
        overlaps=tuple(pairs),
        warnings=tuple(audit_warnings(audits, pairs, len(population), thresholds)),
        computed_at=now,
        population=len(population),
    )


def _population_of(
    segment_id: str,
    population: Mapping[str, Mapping[str, Any]],
    populations: Mapping[str, Set[str]] | None,
) -> Mapping[str, Mapping[str, Any]]:
    if populations is None or segment_id not in populations:
        return population
    return {s: population[s] for s in populations[segment_id] if s in population}


def audit_warnings(
    audits: Sequence[SegmentAudit],
    pairs: Sequence[Overlap],
    population: int,
    thresholds: AuditThresholds = DEFAULT_THRESHOLDS,
) -> list[AuditWarning]:
    """Warnings, grouped by kind: empty, tiny, near-duplicate, skewed, stale, over-segmented."""
    warnings: list[AuditWarning] = []
    warnings += [w for a in audits if (w := _size_warning(a, thresholds)) is not None]
    warnings += [
        AuditWarning(
            AuditWarningKind.NEAR_DUPLICATE,
            (o.a, o.b),
            f"{o.a} and {o.b} are near-duplicates (Jaccard {o.jaccard:.2f})",
        )
        for o in pairs
        if o.jaccard >= thresholds.near_duplicate_jaccard
    ]
    warnings += [w for a in audits for w in _skew_warnings(a)]
    warnings += [
        AuditWarning(
            AuditWarningKind.STALE_MEMBERS,
            (a.segment_id,),
            f"{a.segment_id}: {a.stale_member_share:.0%} of members have no event in the last "
            f"{_days(thresholds.stale_after)}",
        )
        for a in audits
        if a.size and a.stale_member_share >= thresholds.stale_warning_share
    ]
    over = _over_segmentation_warning(audits, population, thresholds)
    if over is not None:
        warnings.append(over)
    return warnings


def _size_warning(audit: SegmentAudit, thresholds: AuditThresholds) -> AuditWarning | None:
    segment_id = audit.segment_id
    if audit.size == 0:
        return AuditWarning(
            AuditWarningKind.EMPTY_SEGMENT, (segment_id,), f"{segment_id} has no members"
        )
    if audit.size < thresholds.tiny_segment_size:
        return AuditWarning(
            AuditWarningKind.TINY_SEGMENT,
            (segment_id,),
            f"{segment_id} has {audit.size} members (fewer than {thresholds.tiny_segment_size})",
        )
    if audit.population and audit.share_of_population < thresholds.tiny_segment_share:
        return AuditWarning(
            AuditWarningKind.TINY_SEGMENT,
            (segment_id,),
            f"{segment_id} holds {audit.share_of_population:.3%} of its population "
            f"(less than {thresholds.tiny_segment_share:.3%})",
        )
    return None


def _skew_warnings(audit: SegmentAudit) -> list[AuditWarning]:
    """One warning per skewed attribute, naming its flagged values."""
    flagged: dict[str, list[Representation]] = {}
    for r in audit.composition:
        if r.flagged:
            flagged.setdefault(r.attribute, []).append(r)
    return [
        AuditWarning(
            AuditWarningKind.SKEWED_COMPOSITION,
            (audit.segment_id,),
            f"{audit.segment_id} is skewed on {attribute}: "
            + ", ".join(f"{r.value} at {r.ratio:.2f}x" for r in values),
        )
        for attribute, values in flagged.items()
    ]


def _over_segmentation_warning(
    audits: Sequence[SegmentAudit], population: int, thresholds: AuditThresholds
) -> AuditWarning | None:
    # Empty segments are warned about on their own; they do not split anyone.
    live = [a.segment_id for a in audits if a.size > 0]
    if not live or len(live) * thresholds.min_population_per_segment <= population:
        return None
    return AuditWarning(
        AuditWarningKind.OVER_SEGMENTATION,
        tuple(live),
        f"{len(live)} segments for {population} subjects "
        f"(fewer than {thresholds.min_population_per_segment} subjects per segment)",
    )


def _days(span: timedelta) -> str:
    days = span.total_seconds() / _SECONDS_PER_DAY
    return f"{days:g} days"
