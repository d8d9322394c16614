"""The profile service as a real process behind ingest: the real-data sample, identity
resolution, consent-gated reads, rebuild by replay and precise errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.profile.v1 import profile_pb2
from tailor_cli.importing.command import import_file
from tailor_cli.importing.uci import customer_totals
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.waiting import wait_until
from tailor_profile.domain.state import new_state
from tailor_profile.domain.view import computed_view
from tailor_profile.testing import (
    ADMIN,
    READER,
    STAFF,
    ProfilePlatform,
    event,
    profile_platform,
    status_details,
)

SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProfilePlatform]:
    async with profile_platform(infra, tmp_path_factory.mktemp("profile-logs")) as running:
        yield running


async def test_the_sample_projects_to_profiles_that_reconcile_with_the_file(
    platform: ProfilePlatform,
) -> None:
    address = platform.group.services["ingest"].address
    summary, _ = await import_file(SAMPLE, ingest_addr=address, admin=STAFF)
    accepted = summary.outcomes["accepted"].events
    await wait_until(
        lambda: _at_least(platform, accepted), timeout=120, message="every event applied"
    )
    expected = customer_totals(SAMPLE)
    got = await platform.projected_totals()
    assert got.keys() == expected.keys()
    assert got == expected


async def _at_least(platform: ProfilePlatform, count: int) -> bool:
    return await platform.applied() >= count


async def test_reads_are_consent_gated_and_personal_traits_open_only_with_consent(
    platform: ProfilePlatform,
) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics")
    identify = event(
        user_id=user,
        identify=events_pb2.Identify(
            email=common_pb2.PersonalField(plaintext=f"{user}@example.com"),
            demographics=events_pb2.Demographics(age=41, country="GB"),
        ),
    )
    reply = await platform.send(identify)
    assert reply.results[0].outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED, reply
    stub = platform.profiles()

    async def exists() -> bool:
        rows = await platform.pg.fetchval(
            f'SELECT count(*) FROM "{platform.schema}".profiles WHERE profile_id = $1', user
        )
        return bool(rows)

    await wait_until(exists, message="profile projected")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetProfile(
            profile_pb2.GetProfileRequest(subject_id=user, purpose="personalization"),
            metadata=READER,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_details_pb2.ErrorInfo()
    assert status_details(denied.value).details[0].Unpack(info)
    assert info.reason == "CONSENT_REQUIRED"
    assert info.metadata["purpose"] == "personalization"

    partial = await stub.GetProfile(
        profile_pb2.GetProfileRequest(
            subject_id=user, purpose="personalization", non_personal_only=True
        ),
        metadata=READER,
    )
    names = {t.name: t for t in partial.profile.traits}
    assert partial.profile.personal_omitted
    assert "email" not in names
    assert names["demographics.age"].value.number_value == 41
    assert not partial.profile.identities

    await platform.grant(user, "personalization")
    # The denial above is cached; the grant reaches profile's cache over the CONSENT stream.
    replies: list[profile_pb2.GetProfileResponse] = []

    async def granted() -> bool:
        try:
            replies.append(
                await stub.GetProfile(
                    profile_pb2.GetProfileRequest(subject_id=user, purpose="personalization"),
                    metadata=READER,
                )
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            return False
        return True

    await wait_until(granted, timeout=5, message="the grant reaches profile")
    full = replies[-1]
    traits = {t.name: t for t in full.profile.traits}
    assert traits["email"].value.string_value == f"{user}@example.com"
    assert traits["email"].personal
    assert not full.profile.personal_omitted
    assert list(full.profile.identities) == [user]
    # Stored sealed: the plain address is nowhere in the schema.
    dump = await platform.pg.fetchval(
        f"SELECT string_agg(state::text, '') FROM \"{platform.schema}\".profiles"
    )
    assert f"{user}@example.com" not in dump

    # A withdrawal closes the profile again within a second.
    await platform.withdraw(user, "personalization")

    async def closed() -> bool:
        try:
            await stub.GetProfile(
                profile_pb2.GetProfileRequest(subject_id=user, purpose="personalization"),
                metadata=READER,
            )
        except grpc.aio.AioRpcError as error:
            return bool(error.code() == grpc.StatusCode.PERMISSION_DENIED)
        return False

    await wait_until(closed, timeout=1.0, message="reads denied after the withdrawal")


async def test_identify_merges_the_anonymous_profile_and_later_events_land_on_the_survivor(
    platform: ProfilePlatform,
) -> None:
    user, anon = unique_name("u"), unique_name("anon")
    for subject in (user, anon):
        await platform.grant(subject, "analytics", "personalization")
    page = event(anonymous_id=anon, page=events_pb2.Page(name="Home", path="/"))
    await platform.send(page)
    await wait_until(lambda: _has_profile(platform, anon), message="anonymous profile")
    identify = event(
        user_id=user,
        anonymous_id=anon,
        identify=events_pb2.Identify(demographics=events_pb2.Demographics(age=30)),
    )
    await platform.send(identify)
    await wait_until(lambda: _merged(platform, anon, user), message="merged")
    later = event(anonymous_id=anon, page=events_pb2.Page(name="Cart", path="/cart"))
    await platform.send(later)

    stub = platform.profiles()

    async def three_events() -> bool:
        reply = await stub.GetProfile(
            profile_pb2.GetProfileRequest(subject_id=anon, purpose="personalization"),
            metadata=READER,
        )
        counts = {c.event: c.lifetime for c in reply.profile.computed.event_counts}
        return counts.get("page") == 2 and counts.get("identify") == 1

    await wait_until(three_events, message="later anonymous events on the survivor")
    history = await stub.GetMergeHistory(
        profile_pb2.GetMergeHistoryRequest(subject_id=anon), metadata=ADMIN
    )
    assert history.profile_id == user
    assert [(m.surviving_profile_id, m.merged_profile_id, m.reason) for m in history.merges] == [
        (user, anon, profile_pb2.MERGE_REASON_IDENTIFY)
    ]


async def _has_profile(platform: ProfilePlatform, profile_id: str) -> bool:
    return bool(
        await platform.pg.fetchval(
            f'SELECT count(*) FROM "{platform.schema}".profiles WHERE profile_id = $1', profile_id
        )
    )


async def _merged(platform: ProfilePlatform, merged: str, survivor: str) -> bool:
    return await platform.pg.fetchval(
        f'SELECT profile_id FROM "{platform.schema}".identities WHERE subject_id = $1', merged
    ) == survivor and not await _has_profile(platform, merged)


async def _snapshot(platform: ProfilePlatform) -> dict[str, Any]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = await platform.pg.fetch(f'SELECT profile_id, state FROM "{platform.schema}".profiles')
    identities = await platform.pg.fetch(f'SELECT * FROM "{platform.schema}".identities')
    profiles = {}
    for row in rows:
        state = json.loads(row["state"])
        traits = {k: (v["v"], v["at"], v["ev"]) for k, v in state["traits"].items()}
        profiles[row["profile_id"]] = (computed_view(state, now, "GBP", None), traits)
    return {
        "profiles": profiles,
        "identities": sorted((r["subject_id"], r["profile_id"]) for r in identities),
    }


async def test_rebuild_by_replay_equals_the_live_projection(platform: ProfilePlatform) -> None:
    applied = await platform.applied()
    before = await _snapshot(platform)
    assert before["profiles"], "the earlier tests leave profiles to rebuild"
    stub = platform.profiles()
    started = await stub.RebuildProfiles(
        profile_pb2.RebuildProfilesRequest(reason="test"), metadata=ADMIN
    )
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub.RebuildProfiles(profile_pb2.RebuildProfilesRequest(), metadata=ADMIN)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def done() -> bool:
        reply = await stub.GetRebuildStatus(
            profile_pb2.GetRebuildStatusRequest(rebuild_id=started.rebuild.rebuild_id),
            metadata=ADMIN,
        )
        assert reply.rebuild.state != profile_pb2.REBUILD_STATE_FAILED, reply.rebuild.error
        return bool(reply.rebuild.state == profile_pb2.REBUILD_STATE_COMPLETED)

    await wait_until(done, timeout=120, message="rebuild completed")
    assert await platform.applied() == applied
    assert await _snapshot(platform) == before


async def test_bad_queries_get_precise_errors(platform: ProfilePlatform) -> None:
    stub = platform.profiles()
    cases = [
        (
            profile_pb2.TraitCondition(trait="no.such", op=common_pb2.COMPARISON_EQ),
            "conditions[0].trait",
        ),
        (
            profile_pb2.TraitCondition(
                trait="computed.orders_30d",
                op=common_pb2.COMPARISON_STARTS_WITH,
                value=struct_pb2.Value(string_value="x"),
            ),
            "conditions[0].op",
        ),
        (
            profile_pb2.TraitCondition(
                trait="computed.orders_30d",
                op=common_pb2.COMPARISON_GT,
                value=struct_pb2.Value(string_value="many"),
            ),
            "conditions[0].value",
        ),
        (
            profile_pb2.TraitCondition(
                trait="email",
                op=common_pb2.COMPARISON_EQ,
                value=struct_pb2.Value(string_value="a@b.c"),
            ),
            "conditions[0].trait",
        ),
    ]
    for condition, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.FindProfiles(
                profile_pb2.FindProfilesRequest(conditions=[condition], purpose="marketing"),
                metadata=READER,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        request = error_details_pb2.BadRequest()
        assert status_details(bad.value).details[0].Unpack(request)
        assert request.field_violations[0].field == field
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.GetProfile(profile_pb2.GetProfileRequest(purpose="x"), metadata=READER)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetProfile(
            profile_pb2.GetProfileRequest(subject_id="nobody-at-all", purpose="marketing"),
            metadata=READER,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_find_profiles_filters_by_computed_traits_and_consent(
    platform: ProfilePlatform,
) -> None:
    stub = platform.profiles()
    request = profile_pb2.FindProfilesRequest(
        conditions=[
            profile_pb2.TraitCondition(
                trait="computed.orders_lifetime",
                op=common_pb2.COMPARISON_GE,
                value=struct_pb2.Value(number_value=10),
            )
        ],
        purpose="marketing",
        order_by="computed.orders_lifetime desc",
    )
    reply = await stub.FindProfiles(request, metadata=READER)
    assert not reply.profiles  # nobody in the sample has consented to marketing
    buyers = await platform.pg.fetch(
        f"SELECT profile_id, (state->'life'->>'orders')::int AS orders "
        f'FROM "{platform.schema}".profiles ORDER BY 2 DESC, 1 LIMIT 3'
    )
    for row in buyers:
        await platform.grant(row["profile_id"], "marketing")
    wanted = [(r["profile_id"], r["orders"]) for r in buyers if r["orders"] >= 10]
    assert wanted, "the sample has customers with ten orders or more"
    replies: list[profile_pb2.FindProfilesResponse] = []

    async def found_the_granted() -> bool:
        # The denials above are cached until the grants arrive over the CONSENT stream.
        replies.append(await stub.FindProfiles(request, metadata=READER))
        return [(p.profile_id, p.computed.orders_lifetime) for p in replies[-1].profiles] == wanted

    await wait_until(found_the_granted, timeout=5, message="the granted buyers are found")
    assert all(p.personal_omitted for p in replies[-1].profiles)


def test_an_empty_state_has_zero_figures() -> None:
    view = computed_view(new_state(), datetime.now(UTC), "GBP", None)
    assert view["orders_lifetime"] == 0
    assert view["revenue_lifetime"]["amount"] == "0.00"
