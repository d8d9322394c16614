"""`tailor profile …` against real consent, ingest and profile processes: rebuild with its
summary, reads and searches, consent refusals, merges and batch jobs, exit codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor_cli.testing import cli_data_dir, run_tailor
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORDERS = 3


class Platform(RunningPlatform):
    """The services, the CLI's data directory, and how many events ingest accepted."""

    data_dir: Path = Path()
    accepted: int = 0

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        """Send through ingest's public API; every event must be accepted."""
        reply = await super().send(*events)
        outcomes = [r.outcome for r in reply.results]
        assert outcomes == [ingest_pb2.EVENT_OUTCOME_ACCEPTED] * len(events), reply
        self.accepted += len(events)
        return reply


def _event(**fields: Any) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(message_id=unique_name("m"), **fields)
    event.timestamp.FromDatetime(datetime.now(UTC))
    return event


def _order(subject: str) -> events_pb2.CustomerEvent:
    return _event(
        user_id=subject,
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


@dataclass(frozen=True)
class People:
    buyer: str  # consented to everything, identified, several orders
    stranger: str  # one order (collected as necessary), no consent to read
    anonymous: str  # browsed anonymously, then identified as `member`
    member: str


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("profile-cli-logs"),
        ("consent", "ingest", "profile"),
        prefix="cli",
        kind=Platform,
    ) as running:
        assert isinstance(running, Platform)
        running.data_dir = cli_data_dir(tmp_path_factory.mktemp("tailor-data"))
        yield running


@pytest.fixture(scope="module")
async def people(platform: Platform, infra: Infra) -> People:
    """Events of four ids sent through ingest and projected before any test runs."""
    found = People(
        unique_name("buyer"), unique_name("stranger"), unique_name("anon"), unique_name("member")
    )
    await platform.grant(found.buyer, "analytics", "personalization", "marketing")
    for subject in (found.anonymous, found.member):
        await platform.grant(subject, "analytics", "personalization")
    identify = _event(
        user_id=found.buyer,
        identify=events_pb2.Identify(
            email=common_pb2.PersonalField(plaintext=f"{found.buyer}@example.com"),
            demographics=events_pb2.Demographics(age=41, country="GB"),
        ),
    )
    await platform.send(identify, *(_order(found.buyer) for _ in range(ORDERS)))
    await platform.send(_order(found.stranger))
    await platform.send(
        _event(anonymous_id=found.anonymous, page=events_pb2.Page(name="Home", path="/"))
    )
    await platform.send(
        _event(user_id=found.member, anonymous_id=found.anonymous, identify=events_pb2.Identify())
    )
    schema = platform.group.services["profile"].schema
    pg = await asyncpg.connect(infra.pg_dsn)
    try:

        async def all_applied() -> bool:
            applied = await pg.fetchval(f'SELECT count(*) FROM "{schema}".applied_events')
            return bool(applied >= platform.accepted)

        await wait_until(all_applied, timeout=60, message="every event projected")
    finally:
        await pg.close()
    return found


@pytest.fixture(autouse=True)
def credentials_from_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILOR_TOKEN", raising=False)
    monkeypatch.delenv("TAILOR_PROFILE_ADDR", raising=False)


async def tailor(platform: Platform, *args: str) -> tuple[int, str]:
    """Run ``tailor profile …`` in-process; (exit code, everything printed)."""
    address = platform.service("profile").address
    return await run_tailor(platform.data_dir, "profile", *args, "--profile-addr", address)


async def test_rebuild_completes_and_its_json_summary_counts_every_event(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "rebuild", "--reason", "cli test", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["state"] == "completed"
    assert summary["events_replayed"] == platform.accepted
    assert summary["duration_seconds"] >= 0
    assert summary["requested_by"].startswith("cli:")  # the staff token the CLI minted

    code, out = await tailor(platform, "rebuild-status", "--json")
    assert code == 0
    assert json.loads(out)["rebuild_id"] == summary["rebuild_id"]
    code, out = await tailor(platform, "rebuild-status", summary["rebuild_id"])
    assert code == 0
    assert "completed" in out
    assert "events replayed" in out


async def test_get_shows_traits_computed_figures_and_identities(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "get", people.buyer, "--purpose", "personalization")
    assert code == 0, out
    assert "demographics.age" in out, out
    assert "computed.orders_lifetime" in out
    assert f"identities: {people.buyer}" in out

    code, out = await tailor(
        platform, "get", people.buyer, "--purpose", "personalization", "--json"
    )
    profile = json.loads(out)
    assert profile["computed"]["orders_lifetime"] == ORDERS
    traits = {t["name"]: t["value"] for t in profile["traits"]}
    assert traits["email"] == f"{people.buyer}@example.com"


async def test_get_without_consent_exits_non_zero_naming_permission_denied(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "get", people.stranger, "--purpose", "personalization")
    assert code == 1
    assert "PERMISSION_DENIED" in out
    assert "CONSENT_REQUIRED" in out
    assert "Traceback" not in out

    code, out = await tailor(
        platform, "get", people.stranger, "--purpose", "personalization", "--json"
    )
    error = json.loads(out)
    assert (error["error"], error["reason"]) == ("PERMISSION_DENIED", "CONSENT_REQUIRED")
    assert error["metadata"] == {"purpose": "personalization"}

    code, out = await tailor(
        platform, "get", people.stranger, "--purpose", "personalization", "--non-personal-only"
    )
    assert code == 0, out
    assert "personal traits and identities left out" in out


async def test_find_lists_the_consented_profiles_that_match(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(
        platform,
        "find",
        "--where",
        "computed.orders_lifetime >= 1",
        "--purpose",
        "marketing",
        "--order-by",
        "computed.orders_lifetime desc",
        "--json",
    )
    assert code == 0, out
    # The stranger ordered too, but gave no consent for marketing.
    assert [p["profile_id"] for p in json.loads(out)["profiles"]] == [people.buyer]
    code, out = await tailor(
        platform, "find", "--where", "computed.orders_lifetime>=1", "--purpose", "marketing"
    )
    assert code == 0
    assert people.buyer in out


async def test_find_with_a_bad_condition_exits_2_and_a_refused_one_names_the_field(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(
        platform, "find", "--where", "computed.orders_lifetime >>= ten", "--purpose", "marketing"
    )
    assert code == 2
    assert "computed.orders_lifetime >>= ten" in out
    assert "Traceback" not in out

    code, out = await tailor(
        platform, "find", "--where", "no.such.trait = 1", "--purpose", "marketing"
    )
    assert code == 1
    assert "INVALID_ARGUMENT" in out
    assert "conditions[0].trait" in out


async def test_merges_show_identity_resolution_and_batch_jobs_run_on_demand(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "merges", people.anonymous, "--json")
    assert code == 0, out
    history = json.loads(out)
    assert history["profile_id"] == people.member
    assert [(m["merged_profile_id"], m["reason"]) for m in history["merges"]] == [
        (people.anonymous, "MERGE_REASON_IDENTIFY")
    ]

    code, out = await tailor(platform, "jobs", "run", "rfm-scores", "--wait", "--json")
    assert code == 0, out
    run = json.loads(out)
    assert run["state"] == "JOB_STATE_COMPLETED"
    code, out = await tailor(platform, "jobs", "list", "--job", "rfm-scores", "--json")
    assert code == 0
    assert run["run_id"] in [r["run_id"] for r in json.loads(out)]
    code, out = await tailor(platform, "jobs", "list")
    assert code == 0
    assert "rfm-scores" in out, out
