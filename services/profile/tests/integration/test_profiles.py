"""The profile service as a real process behind ingest: the real-data sample, identity
resolution, consent-gated reads, rebuild by replay and precise errors."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tailor.profile.v1 import profile_pb2, profile_pb2_grpc
from tailor_cli.importing import uci
from tailor_cli.importing.command import import_file
from tailor_core.auth import mint_token
from tailor_core.bus import delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup
from tailor_core.testing.waiting import wait_until
from tailor_profile.domain.state import new_state
from tailor_profile.domain.view import computed_view

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "p" * 40
SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"


def bearer(*scopes: str, kind: str = "compliance") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(SECRET, 'staff-1', kind, list(scopes))}"),)  # type: ignore[arg-type]


STAFF = bearer("ingest:admin")
OFFICER = bearer("consent:write")
READER = bearer("profile:read", kind="service")
ADMIN = bearer("profile:admin", "profile:read")


@dataclass
class Platform:
    group: ServiceGroup
    naming: Naming
    pg: asyncpg.Connection
    schema: str
    channels: list[grpc.aio.Channel]

    def _channel(self, name: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.group.services[name].address)
        self.channels.append(channel)
        return channel

    def profiles(self) -> profile_pb2_grpc.ProfileServiceStub:
        return profile_pb2_grpc.ProfileServiceStub(self._channel("profile"))

    async def grant(self, subject: str, *purposes: str) -> None:
        await consent_pb2_grpc.ConsentServiceStub(self._channel("consent")).GrantConsent(
            consent_pb2.GrantConsentRequest(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=OFFICER,
        )

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc

        if not hasattr(self, "_key"):
            created = await admin_pb2_grpc.IngestAdminServiceStub(
                self._channel("ingest")
            ).CreateApiKey(admin_pb2.CreateApiKeyRequest(source_id="app"), metadata=STAFF)
            self._key = (("x-api-key", created.secret),)
        reply: ingest_pb2.BatchResponse = await ingest_pb2_grpc.IngestServiceStub(
            self._channel("ingest")
        ).Batch(ingest_pb2.BatchRequest(events=list(events)), metadata=self._key)
        return reply

    async def applied(self) -> int:
        return int(await self.pg.fetchval(f'SELECT count(*) FROM "{self.schema}".applied_events'))


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    group = ServiceGroup(
        infra,
        unique_name("pr"),
        SECRET,
        tmp_path_factory.mktemp("profile-logs"),
        names=("consent", "ingest", "profile"),
    )
    group.services["profile"].extra_env["TAILOR_PARTITION_HEARTBEAT_SECONDS"] = "0.3"
    await group.start()
    naming = Naming(group.namespace, 4)
    pg = await asyncpg.connect(infra.pg_dsn)
    found = Platform(group, naming, pg, group.services["profile"].schema, [])
    try:
        yield found
    finally:
        for channel in found.channels:
            await channel.close()
        await group.stop()
        await pg.close()
        import nats

        nc = await nats.connect(infra.nats_url)
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])
        await nc.drain()
        await group.drop_schemas()


def _event(kind: str, **fields: Any) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(message_id=unique_name("m"), **fields)
    event.timestamp.FromDatetime(datetime.now(UTC))
    return event


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError("no status details")


async def test_the_sample_projects_to_profiles_that_reconcile_with_the_file(
    platform: Platform,
) -> None:
    address = platform.group.services["ingest"].address
    summary, _ = await import_file(SAMPLE, ingest_addr=address, admin=STAFF)
    accepted = summary.outcomes["accepted"].events
    await wait_until(
        lambda: _at_least(platform, accepted), timeout=120, message="every event applied"
    )
    # Totals computed from the file alone: orders, refunds and revenue per customer.
    expected: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"orders": 0, "refunds": 0, "revenue": Decimal(0)}
    )
    for invoice in uci.read_invoices(SAMPLE):
        event = uci.invoice_event(invoice)
        if any(
            p.quantity < 0 or Decimal(p.price.amount or 0) < 0 for p in event.track.order.products
        ):
            continue
        subject = event.user_id or event.anonymous_id
        amount = Decimal(event.track.order.revenue.amount)
        if event.track.event == "Order Completed":
            expected[subject]["orders"] += 1
            expected[subject]["revenue"] += amount
        else:
            expected[subject]["refunds"] += 1
            expected[subject]["revenue"] -= amount
    rows = await platform.pg.fetch(f'SELECT profile_id, state FROM "{platform.schema}".profiles')
    got = {}
    for row in rows:
        life = json.loads(row["state"])["life"]
        got[row["profile_id"]] = {
            "orders": life["orders"],
            "refunds": life["refunds"],
            "revenue": Decimal(life["rev"]),
        }
    assert got.keys() == expected.keys()
    assert got == dict(expected)


async def _at_least(platform: Platform, count: int) -> bool:
    return await platform.applied() >= count


async def test_reads_are_consent_gated_and_personal_traits_open_only_with_consent(
    platform: Platform,
) -> None:
    user = unique_name("u")
    await platform.grant(user, "analytics")
    identify = _event(
        "identify",
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
    assert _status(denied.value).details[0].Unpack(info)
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
    full = await stub.GetProfile(
        profile_pb2.GetProfileRequest(subject_id=user, purpose="personalization"),
        metadata=READER,
    )
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


async def test_identify_merges_the_anonymous_profile_and_later_events_land_on_the_survivor(
    platform: Platform,
) -> None:
    user, anon = unique_name("u"), unique_name("anon")
    for subject in (user, anon):
        await platform.grant(subject, "analytics", "personalization")
    page = _event("page", anonymous_id=anon, page=events_pb2.Page(name="Home", path="/"))
    await platform.send(page)
    await wait_until(lambda: _has_profile(platform, anon), message="anonymous profile")
    identify = _event(
        "identify",
        user_id=user,
        anonymous_id=anon,
        identify=events_pb2.Identify(demographics=events_pb2.Demographics(age=30)),
    )
    await platform.send(identify)
    await wait_until(lambda: _merged(platform, anon, user), message="merged")
    later = _event("page", anonymous_id=anon, page=events_pb2.Page(name="Cart", path="/cart"))
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


async def _has_profile(platform: Platform, profile_id: str) -> bool:
    return bool(
        await platform.pg.fetchval(
            f'SELECT count(*) FROM "{platform.schema}".profiles WHERE profile_id = $1', profile_id
        )
    )


async def _merged(platform: Platform, merged: str, survivor: str) -> bool:
    return await platform.pg.fetchval(
        f'SELECT profile_id FROM "{platform.schema}".identities WHERE subject_id = $1', merged
    ) == survivor and not await _has_profile(platform, merged)


async def _snapshot(platform: Platform) -> dict[str, Any]:
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


async def test_rebuild_by_replay_equals_the_live_projection(platform: Platform) -> None:
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


async def test_bad_queries_get_precise_errors(platform: Platform) -> None:
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
        assert _status(bad.value).details[0].Unpack(request)
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


async def test_find_profiles_filters_by_computed_traits_and_consent(platform: Platform) -> None:
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
    reply = await stub.FindProfiles(request, metadata=READER)
    found = [(p.profile_id, p.computed.orders_lifetime) for p in reply.profiles]
    assert found == [(r["profile_id"], r["orders"]) for r in buyers if r["orders"] >= 10]
    assert all(p.personal_omitted for p in reply.profiles)


def test_an_empty_state_has_zero_figures() -> None:
    view = computed_view(new_state(), datetime.now(UTC), "GBP", None)
    assert view["orders_lifetime"] == 0
    assert view["revenue_lifetime"]["amount"] == "0.00"
