"""Figures over the whole population: RFM quintiles and cohort statistics for imputation."""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Buyer:
    profile_id: str
    last_order_at: datetime
    orders: int
    revenue: Decimal


def _quintile(sorted_values: Sequence[float], value: float) -> int:
    """1..5 by the share of the population strictly below ``value`` (ties score alike)."""
    below = bisect.bisect_left(sorted_values, value)
    return 1 + min(4, (5 * below) // max(len(sorted_values), 1))


def rfm_label(recency: int, frequency: int) -> str:
    """The usual RFM segment names, from the recency and frequency scores."""
    if recency >= 4 and frequency >= 4:
        return "champions"
    if recency >= 3 and frequency >= 3:
        return "loyal"
    if recency >= 4:
        return "new_customers"
    if recency == 3:
        return "need_attention"
    if frequency >= 4:
        return "cant_lose_them"
    if frequency == 3:
        return "at_risk"
    return "hibernating"


def rfm_scores(buyers: Sequence[Buyer], now: datetime) -> dict[str, dict[str, int | str]]:
    """Recency, frequency and monetary quintiles (5 = best) per buyer."""
    recency = {b.profile_id: -(now - b.last_order_at).total_seconds() for b in buyers}
    sorted_recency = sorted(recency.values())
    sorted_orders = sorted(float(b.orders) for b in buyers)
    sorted_revenue = sorted(float(b.revenue) for b in buyers)
    scores: dict[str, dict[str, int | str]] = {}
    for buyer in buyers:
        r = _quintile(sorted_recency, recency[buyer.profile_id])
        f = _quintile(sorted_orders, float(buyer.orders))
        m = _quintile(sorted_revenue, float(buyer.revenue))
        scores[buyer.profile_id] = {
            "recency": r,
            "frequency": f,
            "monetary": m,
            "label": rfm_label(r, f),
        }
    return scores


#: Demographic traits imputed within a cohort: numbers by median, the rest by mode.
IMPUTED_NUMERIC = ("demographics.age",)
IMPUTED_CATEGORICAL = ("demographics.gender", "demographics.language")
#: A cohort smaller than this gives no imputation (too few to speak for anyone).
MIN_COHORT = 5


@dataclass(frozen=True, slots=True)
class Observation:
    cohort: str  # the country, or "" when unknown
    values: dict[str, object]


def cohort_statistics(observations: Iterable[Observation]) -> dict[str, dict[str, object]]:
    """Per cohort and trait: the median (numbers) or mode (categories) of observed values.

    Modes break ties by the smallest value so the result does not depend on row order.
    """
    gathered: dict[str, dict[str, list[object]]] = {}
    for observation in observations:
        by_trait = gathered.setdefault(observation.cohort, {})
        for trait, observed in observation.values.items():
            by_trait.setdefault(trait, []).append(observed)
    stats: dict[str, dict[str, object]] = {}
    for cohort, traits in gathered.items():
        for trait, values in traits.items():
            if len(values) < MIN_COHORT:
                continue
            stats.setdefault(cohort, {})[trait] = {
                "value": _typical(trait, values),
                "n": len(values),
            }
    return stats


def _typical(trait: str, values: list[object]) -> object:
    if trait in IMPUTED_NUMERIC:
        median = statistics.median(float(str(v)) for v in values)
        return round(median) if trait == "demographics.age" else median
    counts = Counter(str(v) for v in values)
    top = max(counts.values())
    return min(v for v, n in counts.items() if n == top)


def impute(
    observed: dict[str, object], cohort: str, stats: dict[str, dict[str, object]]
) -> dict[str, object]:
    """Values for the imputable traits ``observed`` lacks, from the cohort's statistics.

    Never offers a value for a trait that was observed.
    """
    found = stats.get(cohort) or {}
    return {
        trait: entry["value"]  # type: ignore[index]
        for trait, entry in found.items()
        if trait not in observed
    }
