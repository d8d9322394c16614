"""The trait catalogue: every trait a profile can hold, its type, whether it is personal,
where it comes from and when it goes stale. FindProfiles and segment rules may name only
what is listed here; a name ending in ``*`` stands for a family (``preferences.size``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum


class TraitType(IntEnum):
    """Mirrors tailor.profile.v1.TraitType."""

    STRING = 1
    NUMBER = 2
    INTEGER = 3
    BOOLEAN = 4
    TIMESTAMP = 5
    STRING_LIST = 6
    DECIMAL = 7
    OBJECT = 8


class TraitSource(IntEnum):
    """Mirrors tailor.profile.v1.TraitSource."""

    IDENTIFY = 1
    COMPUTED = 2
    IMPUTED = 3
    CONTEXT = 4
    MERGE = 5


@dataclass(frozen=True, slots=True)
class TraitDefinition:
    name: str
    type: TraitType
    description: str
    source: TraitSource = TraitSource.IDENTIFY
    personal: bool = False
    stale_after: timedelta | None = None
    imputable: bool = False

    @property
    def is_family(self) -> bool:
        return "*" in self.name

    def matches(self, name: str) -> bool:
        if self.is_family:
            prefix, _, suffix = self.name.partition("*")
            return (
                name.startswith(prefix)
                and name.endswith(suffix)
                and len(name) > len(prefix) + len(suffix)
            )
        return name == self.name


YEAR = timedelta(days=365)
_S, _N, _I, _T, _L, _D = (
    TraitType.STRING,
    TraitType.NUMBER,
    TraitType.INTEGER,
    TraitType.TIMESTAMP,
    TraitType.STRING_LIST,
    TraitType.DECIMAL,
)
_C = TraitSource.COMPUTED


def _personal(name: str, description: str) -> TraitDefinition:
    return TraitDefinition(name, _S, description, personal=True, stale_after=3 * YEAR)


def _computed(name: str, kind: TraitType, description: str) -> TraitDefinition:
    return TraitDefinition(name, kind, description, source=_C)


#: Personal identify fields: trait name -> Identify field name.
PERSONAL_IDENTIFY_FIELDS = {
    "email": "email",
    "name": "name",
    "first_name": "first_name",
    "last_name": "last_name",
    "phone": "phone",
    "address": "address",
    "birthday": "birthday",
}

CATALOGUE: tuple[TraitDefinition, ...] = (
    TraitDefinition("demographics.age", _I, "age in years", stale_after=YEAR, imputable=True),
    TraitDefinition(
        "demographics.gender", _S, "gender as stated", stale_after=3 * YEAR, imputable=True
    ),
    TraitDefinition(
        "demographics.country",
        _S,
        "country of residence (ISO 3166-1 alpha-2)",
        stale_after=2 * YEAR,
        imputable=True,
    ),
    TraitDefinition(
        "demographics.language",
        _S,
        "preferred language (BCP 47)",
        stale_after=2 * YEAR,
        imputable=True,
    ),
    TraitDefinition("preferences.*", _S, "a stated preference", stale_after=YEAR),
    TraitDefinition(
        "interests", _L, "psychographic labels (interests, values, lifestyle)", stale_after=YEAR
    ),
    TraitDefinition("traits.*", TraitType.OBJECT, "a custom trait from the tracking plan"),
    TraitDefinition("group.id", _S, "group (account, company, household) of the latest group call"),
    TraitDefinition(
        "context.locale",
        _S,
        "locale of the latest event",
        source=TraitSource.CONTEXT,
        stale_after=timedelta(days=90),
    ),
    TraitDefinition(
        "context.timezone",
        _S,
        "time zone of the latest event",
        source=TraitSource.CONTEXT,
        stale_after=timedelta(days=90),
    ),
    TraitDefinition(
        "context.country",
        _S,
        "country of the latest event's coarse location",
        source=TraitSource.CONTEXT,
        stale_after=timedelta(days=90),
    ),
    _personal("email", "e-mail address"),
    _personal("name", "full name"),
    _personal("first_name", "first name"),
    _personal("last_name", "last name"),
    _personal("phone", "phone number"),
    _personal("address", "postal address"),
    _personal("birthday", "date of birth"),
    _personal("personal.*", "a personal custom trait"),
    _computed("computed.event_counts.*.last_7d", _I, "events of that name in the last 7 days"),
    _computed("computed.event_counts.*.last_30d", _I, "events of that name in the last 30 days"),
    _computed("computed.event_counts.*.lifetime", _I, "events of that name since the first"),
    _computed("computed.sessions_30d", _I, "sessions in the last 30 days"),
    _computed("computed.sessions_lifetime", _I, "sessions since the first event"),
    _computed("computed.orders_30d", _I, "orders in the last 30 days, net of cancellations"),
    _computed("computed.orders_lifetime", _I, "orders since the first event"),
    _computed("computed.revenue_30d.amount", _D, "revenue in the last 30 days, net of refunds"),
    _computed("computed.revenue_lifetime.amount", _D, "revenue since the first event"),
    _computed("computed.average_order_value.amount", _D, "revenue per order"),
    _computed("computed.refunds_lifetime", _I, "refunds and returns since the first event"),
    _computed("computed.last_order_at", _T, "when the latest order was completed"),
    _computed("computed.rfm.recency", _I, "recency quintile 1..5 (0 = no order)"),
    _computed("computed.rfm.frequency", _I, "frequency quintile 1..5"),
    _computed("computed.rfm.monetary", _I, "monetary quintile 1..5"),
    _computed("computed.rfm.label", _S, "RFM segment label"),
    _computed("computed.favourite_categories", _L, "favourite categories, best first"),
    _computed("computed.favourite_brands", _L, "favourite brands, best first"),
    _computed("computed.open_cart.items", _I, "units added to the cart and not bought"),
    _computed("computed.open_cart.value.amount", _D, "value of the open cart"),
    _computed("computed.open_cart.since", _T, "when the oldest open cart item was added"),
    _computed("computed.engagement_rate_30d", _N, "share of the last 30 days with a session"),
    _computed("computed.last_context.device_type", _S, "device kind of the latest event"),
    _computed("computed.last_context.os_name", _S, "operating system of the latest event"),
    _computed("computed.last_context.channel", _S, "channel of the latest event"),
    _computed("computed.last_context.local_hour", _I, "local hour of the latest event"),
    _computed("computed.last_context.locale", _S, "locale of the latest event"),
    _computed("computed.last_context.timezone", _S, "time zone of the latest event"),
    _computed("computed.last_context.location.country", _S, "country of the latest event"),
    _computed("computed.last_context.location.region", _S, "region of the latest event"),
    _computed("computed.last_context.location.city", _S, "city of the latest event"),
    _computed("computed.last_context.at", _T, "when the latest event happened"),
    _computed("computed.support.interactions_30d", _I, "support interactions, last 30 days"),
    _computed("computed.support.interactions_lifetime", _I, "support interactions in all"),
    _computed("computed.support.average_satisfaction", _N, "mean satisfaction 1..5"),
    _computed("computed.support.last_topic", _S, "topic of the latest interaction"),
    _computed("computed.support.last_outcome", _S, "outcome of the latest interaction"),
    _computed("computed.social_engagements_30d", _I, "social engagements, last 30 days"),
    _computed("first_seen", _T, "first event seen"),
    _computed("last_seen", _T, "latest event seen"),
)


@functools.lru_cache(maxsize=8192)  # on the projection's hot path; the catalogue is fixed
def definition_of(name: str) -> TraitDefinition | None:
    """The catalogue entry for ``name`` (an exact entry wins over a family)."""
    family = None
    for definition in CATALOGUE:
        if definition.name == name:
            return definition
        if family is None and definition.is_family and definition.matches(name):
            family = definition
    return family


def is_personal(name: str) -> bool:
    definition = definition_of(name)
    return definition is not None and definition.personal
