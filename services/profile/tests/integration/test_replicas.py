"""Several profile replicas on one schema: they split the EVENTS partitions, apply every
event once between them, and a replica killed mid-stream loses and doubles nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from tailor.ingest.v1 import ingest_pb2
from tailor_cli.importing.command import import_file
from tailor_cli.importing.uci import CustomerTotals, customer_totals
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceProcess
from tailor_core.testing.waiting import wait_until
from tailor_ingest.testing import order_event
from tailor_profile.projection import hash_text
from tailor_profile.testing import (
    STAFF,
    ProfilePlatform,
    profile_platform,
    scrape,
    with_metrics,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.embedded_smoke]


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProfilePlatform]:
    async with profile_platform(infra, tmp_path_factory.mktemp("profile-logs")) as running:
        yield running


SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"
PARTITIONS = 4  # what ServiceProcess gives every service


async def _owned(process: ServiceProcess) -> int:
    return int((await scrape(process)).get("tailor_partitions_owned", 0))


async def _lock_holders(platform: ProfilePlatform) -> dict[int, list[int]]:
    """Backend pid -> the partitions whose advisory lock it holds."""
    rows = await platform.pg.fetch(
        "SELECT pid, objid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1 AND objsubid = 2 ORDER BY objid",
        hash_text(platform.schema),
    )
    holders: dict[int, list[int]] = {}
    for row in rows:
        holders.setdefault(row["pid"], []).append(int(row["objid"]))
    return holders


@pytest.fixture(scope="module")
async def second(platform: ProfilePlatform) -> ServiceProcess:
    replica = with_metrics(platform.group.replica("profile"))
    await replica.start()
    platform.group.services["profile-2"] = replica  # stopped with the group
    return replica


async def test_two_replicas_split_the_partitions_and_apply_every_event_once(
    platform: ProfilePlatform, second: ServiceProcess
) -> None:
    first = platform.profile

    async def even_split() -> bool:
        return await _owned(first) == 2 and await _owned(second) == 2

    await wait_until(even_split, timeout=30, message="two partitions each")
    holders = await _lock_holders(platform)
    assert sorted(len(p) for p in holders.values()) == [2, 2]
    assert sorted(p for ps in holders.values() for p in ps) == list(range(PARTITIONS))

    summary, _ = await import_file(
        SAMPLE, ingest_addr=platform.group.services["ingest"].address, admin=STAFF
    )
    accepted = summary.outcomes["accepted"].events

    async def applied_by_both() -> int:
        figures = [await scrape(p) for p in (first, second)]
        return int(sum(f.get("tailor_inbox_events_applied_total", 0) for f in figures))

    async def all_applied() -> bool:
        return await applied_by_both() >= accepted

    await wait_until(all_applied, timeout=120, message="every event applied")
    figures = [await scrape(p) for p in (first, second)]
    assert await applied_by_both() == accepted
    assert all(f["tailor_inbox_events_applied_total"] > 0 for f in figures), figures
    assert all(f.get("tailor_inbox_duplicates_total", 0) == 0 for f in figures), figures
    assert await platform.applied() == accepted
    assert await platform.projected_totals() == customer_totals(SAMPLE)


async def test_a_replica_killed_mid_stream_changes_no_counts(
    platform: ProfilePlatform, second: ServiceProcess
) -> None:
    first = platform.profile
    await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))
    subjects = [unique_name("buyer") for _ in range(150)]
    expected: dict[str, CustomerTotals] = {}
    events = []
    for order in range(10):
        for number, subject in enumerate(subjects):
            quantity = 1 + (number + order) % 7
            events.append(order_event(subject, f"{subject}-{order}", quantity=quantity))
            was = expected.get(subject, CustomerTotals())
            revenue = Decimal(events[-1].track.order.revenue.amount)
            expected[subject] = CustomerTotals(was.orders + 1, 0, was.revenue + revenue)
    before = await platform.applied()
    for start in range(0, len(events), 500):
        reply = await platform.send(*events[start : start + 500])
        assert all(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results)

    # Small batches, so the projection is still busy when the first replica dies.
    for replica in (first, second):
        replica.extra_env["TAILOR_PROJECTION_BATCH"] = "10"
    await asyncio.gather(first.start(), second.start())

    async def under_way() -> bool:
        return await platform.applied() - before >= 300

    await wait_until(under_way, timeout=60, message="projection under way")
    first.kill()
    at_kill = await platform.applied() - before
    assert at_kill < len(events), "the projection finished before the kill: nothing tested"

    async def survivor_owns_all() -> bool:
        return await _owned(second) == PARTITIONS

    await wait_until(survivor_owns_all, timeout=30, message="the survivor takes every partition")
    await first.start()

    async def all_applied() -> bool:
        return await platform.applied() - before >= len(events)

    # Messages the killed replica held unacknowledged come back after the ack wait (30 s).
    await wait_until(all_applied, timeout=150, message="every event applied after the kill")
    assert await platform.applied() - before == len(events)
    projected = await platform.projected_totals()
    assert {s: projected[s] for s in subjects} == expected
