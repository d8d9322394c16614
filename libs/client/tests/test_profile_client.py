"""ProfileClient and AsyncProfileClient against real consent, ingest and profile processes:
reads round-trip, consent refusals raise ConsentRequired, bad requests name the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.profile.v1 import profile_pb2
from tailor_client import AsyncIngestClient, AsyncProfileClient, ProfileClient, customer_event
from tailor_client.errors import ConsentRequired, InvalidArgument, NotFound, PermissionDenied
from tailor_client.profile import condition
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until

from .conftest import token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READER = token("profile:read", "profile:admin")


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("profile-client-logs"),
        ("consent", "ingest", "profile"),
        prefix="cp",
    ) as running:
        yield running


def _order(user: str) -> events_pb2.CustomerEvent:
    return customer_event(
        user_id=user,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=unique_name("o"),
                products=[
                    events_pb2.Product(
                        product_id="85123A",
                        price=common_pb2.Money(amount="2.55", currency="GBP"),
                        quantity=2,
                    )
                ],
                revenue=common_pb2.Money(amount="5.10", currency="GBP"),
            ),
        ),
    )


@pytest.fixture(scope="module")
async def shoppers(platform: RunningPlatform) -> tuple[str, str]:
    """(one who consented to personalization, one who did not), both with an order."""
    consented, stranger = unique_name("buyer"), unique_name("stranger")
    await platform.grant(consented, "analytics", "personalization")
    secret = (await platform.api_key())[0][1]
    async with AsyncIngestClient(platform.service("ingest").address, secret) as ingest:
        identify = customer_event(
            user_id=consented,
            identify=events_pb2.Identify(demographics=events_pb2.Demographics(country="GB")),
        )
        results = await ingest.send([identify, _order(consented), _order(stranger)])
    assert [r.outcome for r in results] == [ingest_pb2.EVENT_OUTCOME_ACCEPTED] * 3, results
    async with AsyncProfileClient(platform.service("profile").address, READER) as profiles:

        async def projected() -> bool:
            try:
                found = await profiles.batch_get_profiles(
                    [consented, stranger], purpose="personalization", non_personal_only=True
                )
            except NotFound:
                return False
            traits = {t.name for p in found.profiles for t in p.traits}
            orders = [p.computed.orders_lifetime for p in found.profiles]
            return orders == [1, 1] and "demographics.country" in traits

        await wait_until(projected, timeout=30, message="the identify and both orders projected")
    return consented, stranger


async def test_a_consented_profile_round_trips_through_both_clients(
    platform: RunningPlatform, shoppers: tuple[str, str]
) -> None:
    consented, _ = shoppers
    address = platform.service("profile").address
    async with AsyncProfileClient(address, READER) as profiles:
        profile = await profiles.get_profile(consented, purpose="personalization")
        catalogue = await profiles.list_trait_definitions()
        found = await profiles.find_profiles(
            [condition("computed.orders_lifetime", ">=", 1)], purpose="personalization"
        )
    assert profile.profile_id == consented
    assert profile.computed.orders_lifetime == 1
    assert {t.name: t.value.string_value for t in profile.traits}["demographics.country"] == "GB"
    assert "computed.orders_lifetime" in {t.name for t in catalogue}
    assert [p.profile_id for p in found.profiles] == [consented]  # the stranger gave no consent

    def blocking() -> tuple[profile_pb2.Profile, profile_pb2.GetMergeHistoryResponse]:
        with ProfileClient(address, READER) as client:
            return (
                client.get_profile(consented, purpose="personalization"),
                client.get_merge_history(consented),
            )

    again, merges = await asyncio.to_thread(blocking)
    assert (again.profile_id, again.version) == (profile.profile_id, profile.version)
    assert (merges.profile_id, list(merges.merges)) == (consented, [])


async def test_reading_without_consent_raises_consent_required_naming_the_purpose(
    platform: RunningPlatform, shoppers: tuple[str, str]
) -> None:
    _, stranger = shoppers
    async with AsyncProfileClient(platform.service("profile").address, READER) as profiles:
        with pytest.raises(ConsentRequired) as refused:
            await profiles.get_profile(stranger, purpose="personalization")
        partial = await profiles.get_profile(
            stranger, purpose="personalization", non_personal_only=True
        )
    assert isinstance(refused.value, PermissionDenied)
    assert refused.value.reason == "CONSENT_REQUIRED"
    assert refused.value.purpose == "personalization"
    assert "personalization" in refused.value.message
    assert partial.personal_omitted


async def test_bad_requests_raise_invalid_argument_naming_the_field(
    platform: RunningPlatform, shoppers: tuple[str, str]
) -> None:
    async with AsyncProfileClient(platform.service("profile").address, READER) as profiles:
        with pytest.raises(InvalidArgument) as bad:
            await profiles.find_profiles(
                [condition("no.such.trait", "=", 1)], purpose="personalization"
            )
        with pytest.raises(NotFound):
            await profiles.get_merge_history(unique_name("nobody"))
    assert bad.value.violation("conditions[0].trait") is not None, bad.value.violations
