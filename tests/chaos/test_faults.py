"""Faults under a steady load: each service SIGKILLed in turn and restarted, NATS restarted,
Postgres restarted. The platform runs on a Postgres and a NATS of its own (the embedded
servers), so restarting them disturbs nothing else. A sender keeps sending orders through
ingest at a fixed pace and, like a client library, resends what was not acknowledged with
the same message id. In every case the final counts reconcile exactly with what was sent —
nothing lost, nothing counted twice — and the time to recover is reported."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest

from tailor.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tailor_core.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until
from tailor_ingest.testing import order_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBJECTS = 20
PACE_SECONDS = 0.02  # about 50 orders a second
RETRY_PAUSE_SECONDS = 0.1  # how long a client waits before resending what was refused
SERVICES = ("consent", "ingest", "profile", "segment", "recommend")


@dataclass
class Servers:
    postgres: EmbeddedPostgres
    nats: EmbeddedNats


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("chaos-servers")
    postgres = EmbeddedPostgres(base / "postgres").start()
    nats = EmbeddedNats(base / "nats").start()
    try:
        yield Servers(postgres, nats)
    finally:
        nats.stop()
        postgres.stop()


@pytest.fixture(scope="module")
async def platform(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    infra = Infra(servers.postgres.dsn, servers.nats.url, "embedded")
    async with running_platform(
        infra, tmp_path_factory.mktemp("chaos-logs"), SERVICES, prefix="ch"
    ) as running:
        yield running


@dataclass
class Sender:
    """Orders at a fixed pace; each one resent with its message id until acknowledged."""

    platform: RunningPlatform
    subjects: list[str]
    acknowledged: dict[str, int] = field(default_factory=dict)  # subject -> orders
    sent: int = 0
    retries: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _send_one(self, subject: str, message_id: str) -> None:
        event = order_event(subject, message_id, message_id=message_id)
        while True:
            try:
                channel = grpc.aio.insecure_channel(self.platform.service("ingest").address)
                async with channel:
                    reply = await ingest_pb2_grpc.IngestServiceStub(channel).Batch(
                        ingest_pb2.BatchRequest(events=[event]),
                        metadata=await self.platform.api_key(),
                        timeout=5,
                    )
                outcome = reply.results[0].outcome
                if outcome in (
                    ingest_pb2.EVENT_OUTCOME_ACCEPTED,
                    ingest_pb2.EVENT_OUTCOME_DUPLICATE,
                ):
                    self.acknowledged[subject] = self.acknowledged.get(subject, 0) + 1
                    return
                raise AssertionError(f"order refused: {reply}")
            except grpc.aio.AioRpcError as error:
                if error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                ):
                    raise
                self.retries += 1
                await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def run(self) -> None:
        number = 0
        while not self._stop.is_set():
            subject = self.subjects[number % len(self.subjects)]
            await self._send_one(subject, f"{subject}-{number}")
            self.sent += 1
            number += 1
            await asyncio.sleep(PACE_SECONDS)

    def stop(self) -> None:
        self._stop.set()


async def _fetch(platform: RunningPlatform, query: str, *args: object) -> list[asyncpg.Record]:
    """A query on a connection of its own: the fixture's may not survive a restart."""
    conn = await asyncpg.connect(platform.service("consent").infra.pg_dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _count(platform: RunningPlatform, service: str, table: str, subjects: list[str]) -> int:
    schema = platform.service(service).schema
    rows = await _fetch(
        platform,
        f'SELECT count(*) AS n FROM "{schema}".{table} WHERE subject_id = ANY($1)',
        subjects,
    )
    return int(rows[0]["n"])


async def _reconciled(platform: RunningPlatform, sender: Sender) -> None:
    """Every acknowledged order is counted exactly once by profile, segment and recommend."""
    total = sum(sender.acknowledged.values())

    async def profile_orders() -> dict[str, int]:
        schema = platform.service("profile").schema
        rows = await _fetch(
            platform,
            f'SELECT profile_id, state FROM "{schema}".profiles WHERE profile_id = ANY($1)',
            sender.subjects,
        )
        return {r["profile_id"]: json.loads(r["state"])["life"]["orders"] for r in rows}

    seen: dict[str, object] = {}

    async def everyone_counted() -> bool:
        seen["profile"] = sum((await profile_orders()).values())
        seen["segment"] = await _count(platform, "segment", "subject_events", sender.subjects)
        seen["recommend"] = await _count(platform, "recommend", "interactions", sender.subjects)
        return (
            await profile_orders() == sender.acknowledged
            and seen["segment"] == seen["recommend"] == total
        )

    try:
        await wait_until(everyone_counted, timeout=120, interval=0.2, message="counts reconcile")
    except AssertionError as error:
        raise AssertionError(f"{error}: sent {total}, counted {seen}") from None
    assert await profile_orders() == sender.acknowledged


async def _recovery(platform: RunningPlatform, fault: Callable[[], Awaitable[None]]) -> float:
    """Run ``fault`` under the load; return the seconds until an order sent right after it
    is counted by profile (the platform works again)."""
    await fault()
    started = time.monotonic()
    probe = unique_name("probe")
    sender = Sender(platform, [probe])
    await sender._send_one(probe, f"{probe}-0")
    schema = platform.service("profile").schema

    async def counted() -> bool:
        rows = await _fetch(
            platform, f'SELECT count(*) AS n FROM "{schema}".profiles WHERE profile_id = $1', probe
        )
        return bool(rows[0]["n"])

    await wait_until(counted, timeout=120, interval=0.1, message="the platform recovered")
    return time.monotonic() - started


async def _under_load(
    platform: RunningPlatform, fault: Callable[[], Awaitable[None]], label: str
) -> None:
    sender = Sender(platform, [unique_name(f"{label}-") for _ in range(SUBJECTS)])
    load = asyncio.create_task(sender.run())

    async def warmed() -> bool:
        return sender.sent >= 20

    await wait_until(warmed, timeout=60, message="load under way")
    recovery = await _recovery(platform, fault)

    async def more() -> bool:
        return sender.sent >= 60

    await wait_until(more, timeout=120, message="load goes on after the fault")
    sender.stop()
    await load
    await _reconciled(platform, sender)
    print(
        f"\n{label}: recovered in {recovery:.2f} s; {sender.sent} orders, {sender.retries} resends"
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_killed_under_load_loses_and_doubles_nothing(
    platform: RunningPlatform, service: str
) -> None:
    async def kill_and_restart() -> None:
        process = platform.service(service)
        process.kill()
        await process.start()

    await _under_load(platform, kill_and_restart, f"SIGKILL {service}")


async def test_a_nats_restart_under_load_loses_and_doubles_nothing(
    platform: RunningPlatform, servers: Servers
) -> None:
    async def restart() -> None:
        servers.nats.stop()
        # The port can be refused for a moment after the old server exits: a few tries.
        for attempt in range(5):
            try:
                # Not in a worker thread: the server dies with the thread that started it.
                servers.nats.start()
                return
            except EmbeddedServerError:
                if attempt == 4:
                    raise
                await asyncio.sleep(RETRY_PAUSE_SECONDS * 5)

    await _under_load(platform, restart, "NATS restart")


async def test_a_postgres_restart_under_load_loses_and_doubles_nothing(
    platform: RunningPlatform, servers: Servers
) -> None:
    async def restart() -> None:
        # In this thread (the server dies with the thread that started it); the services
        # are processes of their own, so blocking the test's loop meanwhile is harmless.
        servers.postgres.stop()
        servers.postgres.start()

    await _under_load(platform, restart, "Postgres restart")
