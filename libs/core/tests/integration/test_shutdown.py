"""Graceful shutdown under load loses no acknowledged work and counts nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from tailor_core.bus import platform_streams, provision_streams
from tailor_core.migrations import Migration, core_migrations, migrate
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]

PROJECTION = Migration(
    "test",
    1,
    "projection",
    "CREATE TABLE projection (event_id text PRIMARY KEY, subject text, hits int NOT NULL)",
)
TOTAL = 600


async def test_consumer_stopped_by_sigterm_under_load_loses_nothing(
    infra: Infra,
    pool: asyncpg.Pool,
    pg_schema: str,
    js: JetStreamContext,
    naming: Naming,
    worker_process: Callable[..., Any],
) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, pg_schema, [*core_migrations(), PROJECTION])
    await provision_streams(js, platform_streams(naming))
    args = {
        "dsn": infra.pg_dsn,
        "schema": pg_schema,
        "nats_url": infra.nats_url,
        "namespace": naming.namespace,
        "durable": "steady",
        "batch": 20,
    }

    async def publish_steadily() -> None:
        for i in range(TOTAL):
            await js.publish(
                naming.event_subject(f"user-{i % 13}", "Product Viewed"),
                b"view",
                headers={"Nats-Msg-Id": f"v-{i}"},
            )

    async def projected_count() -> int:
        async with pool.acquire() as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM projection")
            return count

    first = await worker_process("consume", args)
    publisher = asyncio.create_task(publish_steadily())

    async def halfway() -> bool:
        return await projected_count() > 100

    await wait_until(halfway, message="consumer busy")
    first.terminate()  # SIGTERM while messages keep arriving
    code, out = await first.finish()
    assert code == 0
    stopped_with = out[-1]["processed"]
    # Everything the stopped consumer processed was committed and acknowledged.
    info = await js.consumer_info(naming.stream_name(Stream.EVENTS), "steady")
    assert info.num_ack_pending == 0
    assert await projected_count() == stopped_with
    await publisher

    second = await worker_process("consume", args)

    async def all_projected() -> bool:
        return await projected_count() == TOTAL

    await wait_until(all_projected, message=f"{TOTAL} projected")
    second.terminate()
    code, out = await second.finish()
    assert code == 0
    assert out[-1]["duplicates"] == 0, "nothing the first consumer acknowledged came back"
    async with pool.acquire() as conn:
        hits = await conn.fetchval("SELECT max(hits) FROM projection")
    assert hits == 1
