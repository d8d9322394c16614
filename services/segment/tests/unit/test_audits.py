"""Segment audits: overlaps, warnings, composition against the population, freshness."""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor_core.errors import InvalidArgument
from tailor_segment.domain.audits import (
    DEFAULT_ATTRIBUTES,
    AuditThresholds,
    AuditWarning,
    AuditWarningKind,
    age_band,
    audit_segments,
    composition,
    freshness,
    overlap,
    overlaps,
    validate_attributes,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _seen(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def _people(count: int, prefix: str = "p", **traits: Any) -> dict[str, dict[str, Any]]:
    return {f"{prefix}{i:05d}": {"last_seen": _seen(1), **traits} for i in range(count)}


def _kinds(warnings: tuple[AuditWarning, ...]) -> list[AuditWarningKind]:
    return [w.kind for w in warnings]


def _audit(
    members: Mapping[str, Set[str]],
    population: Mapping[str, Mapping[str, Any]],
    **thresholds: Any,
) -> tuple[AuditWarning, ...]:
    report = audit_segments(members, population, now=NOW, thresholds=AuditThresholds(**thresholds))
    return report.warnings


# --- overlaps -------------------------------------------------------------------------------


def test_overlap_figures_on_hand_built_sets() -> None:
    members = {"b": {"3", "4", "5"}, "a": {"1", "2", "3", "4"}, "c": {"9"}}
    [found] = overlaps(members)  # c shares nobody: not listed
    assert (found.a, found.b, found.both) == ("a", "b", 2)
    assert found.jaccard == pytest.approx(2 / 5)
    assert found.share_of_smaller == pytest.approx(2 / 3)


def test_a_segment_inside_another_has_share_of_smaller_one() -> None:
    found = overlap("big", {"1", "2", "3", "4"}, "small", {"1", "2"})
    assert found.share_of_smaller == 1.0
    assert found.jaccard == 0.5


@given(st.sets(st.integers(0, 40)), st.sets(st.integers(0, 40)))
def test_overlap_figures_are_bounded_and_symmetric(left: set[int], right: set[int]) -> None:
    a, b = {str(x) for x in left}, {str(x) for x in right}
    there, back = overlap("a", a, "b", b), overlap("b", b, "a", a)
    assert there.both == back.both <= min(len(a), len(b))
    assert there.jaccard == back.jaccard
    assert 0.0 <= there.jaccard <= there.share_of_smaller <= 1.0


# --- warnings -------------------------------------------------------------------------------


def test_empty_segment_warns_empty_and_not_tiny() -> None:
    population = _people(200)
    warnings = _audit({"nobody": set()}, population)
    assert _kinds(warnings) == [AuditWarningKind.EMPTY_SEGMENT]
    assert warnings[0].segment_ids == ("nobody",)


def test_small_segment_warns_tiny_and_a_large_one_does_not() -> None:
    population = _people(1000)
    ids = sorted(population)
    warnings = _audit({"small": set(ids[:10]), "fine": set(ids[500:560])}, population)
    assert [(w.kind, w.segment_ids) for w in warnings] == [
        (AuditWarningKind.TINY_SEGMENT, ("small",))
    ]


def test_segment_with_a_tiny_share_of_a_large_population_warns_tiny() -> None:
    population = _people(100_000)
    ids = sorted(population)
    warnings = _audit({"sliver": set(ids[:60])}, population, tiny_segment_share=0.001)
    assert _kinds(warnings) == [AuditWarningKind.TINY_SEGMENT]
    assert "0.060%" in warnings[0].message
    assert _audit({"sliver": set(ids[:60])}, population, tiny_segment_share=0.0) == ()


def test_near_duplicates_warn_and_distinct_segments_do_not() -> None:
    population = _people(1000)
    ids = sorted(population)
    base = set(ids[:100])
    twin = set(ids[:95])  # Jaccard 0.95
    cousin = set(ids[:80]) | set(ids[200:220])  # Jaccard 80 / 120
    warnings = _audit({"base": base, "twin": twin, "cousin": cousin}, population)
    assert [(w.kind, w.segment_ids) for w in warnings] == [
        (AuditWarningKind.NEAR_DUPLICATE, ("base", "twin"))
    ]
    assert "Jaccard 0.95" in warnings[0].message


def test_near_duplicate_threshold_is_inclusive() -> None:
    population = _people(200)
    ids = sorted(population)
    pair = {"a": set(ids[:100]), "b": set(ids[:90])}  # Jaccard exactly 0.9
    assert _kinds(_audit(pair, population)) == [AuditWarningKind.NEAR_DUPLICATE]
    assert _audit(pair, population, near_duplicate_jaccard=0.91) == ()


def test_too_many_segments_for_the_population_warns_over_segmentation() -> None:
    population = _people(300)
    ids = sorted(population)
    members = {f"s{i}": set(ids[i * 60 : (i + 1) * 60]) for i in range(5)}
    warnings = _audit(members, population, min_population_per_segment=100)
    assert _kinds(warnings) == [AuditWarningKind.OVER_SEGMENTATION]
    assert warnings[0].segment_ids == ("s0", "s1", "s2", "s3", "s4")
    assert _audit(members, population, min_population_per_segment=60) == ()


def test_stale_members_warn_when_most_are_stale() -> None:
    population = {
        **_people(60, prefix="old", last_seen=_seen(45)),
        **_people(40, prefix="new", last_seen=_seen(2)),
    }
    stale = _audit({"mostly_old": set(population)}, population)
    assert _kinds(stale) == [AuditWarningKind.STALE_MEMBERS]
    assert "60%" in stale[0].message
    assert _audit({"mostly_old": set(population)}, population, stale_warning_share=0.7) == ()


# --- composition ----------------------------------------------------------------------------


def _countries() -> dict[str, dict[str, Any]]:
    """100 people: 50 GB, 30 FR, 20 DE."""
    return {
        **_people(50, prefix="gb", **{"demographics.country": "GB"}),
        **_people(30, prefix="fr", **{"demographics.country": "FR"}),
        **_people(20, prefix="de", **{"demographics.country": "DE"}),
    }


def test_representation_ratios_on_a_hand_computed_example() -> None:
    population = _countries()
    # 20 members: 16 GB, 2 FR, 2 DE.
    segment = {f"gb{i:05d}" for i in range(16)} | {"fr00000", "fr00001", "de00000", "de00001"}
    rows = composition(
        segment,
        population,
        ["demographics.country"],
        AuditThresholds(min_representation_count=5),
    )
    found = {r.value: r for r in rows}
    assert [r.value for r in rows] == ["DE", "FR", "GB"]
    gb, fr, de = found["GB"], found["FR"], found["DE"]
    assert (gb.segment_share, gb.population_share, gb.ratio) == pytest.approx((0.8, 0.5, 1.6))
    assert (fr.segment_share, fr.population_share, fr.ratio) == pytest.approx((0.1, 0.3, 1 / 3))
    assert (de.segment_share, de.population_share, de.ratio) == pytest.approx((0.1, 0.2, 0.5))
    assert (gb.segment_count, gb.population_count) == (16, 50)
    # GB: 16 observed. FR: 6 expected (20 x 0.3). DE: 2 observed, 4 expected: too little
    # support to tell from noise.
    assert (gb.flagged, fr.flagged, de.flagged) == (True, True, False)


def test_ratios_on_the_four_fifths_bounds_are_not_flagged() -> None:
    population = _countries()
    # 80 members: 50 GB (0.625, ratio 1.25), 24 FR (0.3, ratio 1.0), 6 DE (0.075, 0.375).
    segment = (
        {f"gb{i:05d}" for i in range(50)}
        | {f"fr{i:05d}" for i in range(24)}
        | {f"de{i:05d}" for i in range(6)}
    )
    found = {r.value: r for r in composition(segment, population, ["demographics.country"])}
    assert found["GB"].ratio == pytest.approx(1.25)
    assert not found["GB"].flagged
    assert not found["FR"].flagged
    assert found["DE"].ratio == pytest.approx(0.375)
    assert found["DE"].flagged  # 16 expected: enough support


def test_missing_values_count_as_unknown_and_ages_are_banded() -> None:
    population: dict[str, dict[str, Any]] = {
        "a": {"demographics.age": 17},
        "b": {"demographics.age": 18},
        "c": {"demographics.age": "34"},
        "d": {"demographics.age": 70},
        "e": {},
    }
    rows = composition({"a", "b"}, population, ["demographics.age", "demographics.gender"])
    ages = {r.value: r.population_count for r in rows if r.attribute == "demographics.age"}
    assert ages == {"under 18": 1, "18-24": 1, "25-34": 1, "65+": 1, "unknown": 1}
    genders = [r for r in rows if r.attribute == "demographics.gender"]
    assert [(r.value, r.segment_share, r.population_share) for r in genders] == [
        ("unknown", 1.0, 1.0)
    ]


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "under 18"),
        (24.9, "18-24"),
        (25, "25-34"),
        (64, "55-64"),
        (65, "65+"),
        (None, "unknown"),
        ("old", "unknown"),
        (-3, "unknown"),
        (True, "unknown"),
    ],
)
def test_age_bands(age: Any, band: str) -> None:
    assert age_band(age) == band


def test_members_outside_the_population_are_left_out_of_the_composition() -> None:
    population = _countries()
    rows = composition({"gb00000", "ghost"}, population, ["demographics.country"])
    gb = next(r for r in rows if r.value == "GB")
    assert gb.segment_share == 1.0


def test_skewed_composition_warns_per_attribute() -> None:
    population = _countries()
    only_gb = {f"gb{i:05d}" for i in range(50)}
    warnings = _audit({"uk": only_gb}, population, tiny_segment_size=0)
    assert _kinds(warnings) == [AuditWarningKind.SKEWED_COMPOSITION]
    assert "demographics.country" in warnings[0].message
    assert "GB at 2.00x" in warnings[0].message
    mirror = (
        {f"gb{i:05d}" for i in range(25)}
        | {f"fr{i:05d}" for i in range(15)}
        | {f"de{i:05d}" for i in range(10)}
    )
    assert _audit({"mirror": mirror}, population, tiny_segment_size=0) == ()


def test_each_segment_compares_with_its_own_population() -> None:
    population = _countries()
    consented = {s for s in population if not s.startswith("de")}  # 50 GB, 30 FR
    report = audit_segments(
        {"s": {f"gb{i:05d}" for i in range(10)}},
        population,
        now=NOW,
        attributes=["demographics.country"],
        populations={"s": consented},
    )
    [audit] = report.segments
    assert audit.population == 80
    assert {r.value: r.population_share for r in audit.composition} == {
        "FR": pytest.approx(30 / 80),
        "GB": pytest.approx(50 / 80),
    }


# --- freshness ------------------------------------------------------------------------------


def test_freshness_median_p90_and_stale_share_on_hand_built_dates() -> None:
    last_seen = [_seen(days) for days in range(1, 11)]  # 1..10 days old
    found = freshness(last_seen, NOW, stale_after=timedelta(days=7))
    assert found.median_age_days == pytest.approx(5.5)
    assert found.p90_age_days == pytest.approx(9.1)  # linear between the 9th and 10th
    assert found.median_age_seconds == pytest.approx(5.5 * 86_400)
    assert found.stale == 3  # 8, 9 and 10 days: older than 7
    assert found.stale_share == pytest.approx(0.3)


def test_members_without_last_seen_count_stale_but_have_no_age() -> None:
    found = freshness([_seen(2), None, "not a date", _seen(4)], NOW)
    assert (found.members, found.unknown, found.stale) == (4, 2, 2)
    assert found.median_age_days == pytest.approx(3.0)


def test_a_last_seen_ahead_of_the_clock_is_age_zero() -> None:
    found = freshness([(NOW + timedelta(hours=1)).isoformat()], NOW)
    assert found.median_age_seconds == 0.0


def test_no_members_have_zero_freshness_figures() -> None:
    found = freshness([], NOW)
    assert (found.stale_share, found.median_age_seconds, found.p90_age_seconds) == (0, 0, 0)


# --- the whole audit ------------------------------------------------------------------------


def test_audit_report_sizes_overlaps_and_freshness() -> None:
    population = _countries()
    ids = sorted(population)
    report = audit_segments(
        {"x": set(ids[:60]), "y": set(ids[40:100])},
        population,
        now=NOW,
        thresholds=AuditThresholds(tiny_segment_size=0, min_population_per_segment=0),
    )
    assert [(a.segment_id, a.size, a.population) for a in report.segments] == [
        ("x", 60, 100),
        ("y", 60, 100),
    ]
    [pair] = report.overlaps
    assert pair.both == 20
    assert pair.jaccard == pytest.approx(0.2)
    assert report.segments[0].median_data_age_seconds == pytest.approx(86_400)
    assert report.segments[0].stale_member_share == 0.0
    assert report.computed_at == NOW
    attributes = {r.attribute for r in report.segments[0].composition}
    assert attributes == set(DEFAULT_ATTRIBUTES)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"representation_threshold": 1.0}, "representation_threshold"),
        ({"near_duplicate_jaccard": 0.0}, "near_duplicate_jaccard"),
        ({"tiny_segment_size": -1}, "tiny_segment_size"),
        ({"stale_after": timedelta(0)}, "stale_after"),
    ],
)
def test_out_of_range_thresholds_are_invalid_arguments(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        AuditThresholds(**changes)
    assert [v.field for v in caught.value.field_violations] == [field]


def test_attributes_default_and_unknown_ones_are_rejected() -> None:
    assert validate_attributes([]) == DEFAULT_ATTRIBUTES
    assert validate_attributes(["demographics.country"]) == ("demographics.country",)
    with pytest.raises(InvalidArgument) as caught:
        validate_attributes(["demographics.country", "email"])
    assert [v.field for v in caught.value.field_violations] == ["attributes[1]"]
