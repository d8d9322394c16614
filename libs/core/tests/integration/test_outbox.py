"""The outbox relay: nothing lost, nothing published twice, even when killed mid-way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from tailor_core.bus import platform_streams, provision_streams
from tailor_core.migrations import core_migrations, migrate
from tailor_core.outbox import OutboundMessage, OutboxRelay, enqueue
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra
from tailor_core.testing.streams import stream_message_ids
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]


async def _prepare(pool: asyncpg.Pool, schema: str, js: JetStreamContext, naming: Naming) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, core_migrations())
    await provision_streams(js, platform_streams(naming))


def _messages(naming: Naming, count: int, prefix: str = "evt") -> list[OutboundMessage]:
    return [
        OutboundMessage(
            event_id=f"{prefix}-{i}",
            subject=naming.event_subject(f"user-{i % 7}", "Product Viewed"),
            payload=f"payload-{i}".encode(),
            headers={"Tailor-Type": "Product Viewed"},
        )
        for i in range(count)
    ]


async def _stream_ids(js: JetStreamContext, naming: Naming) -> list[str]:
    return await stream_message_ids(js, naming.stream_name(Stream.EVENTS))


async def test_relay_publishes_committed_events_in_order_and_empties_the_outbox(
    pool: asyncpg.Pool, pg_schema: str, js: JetStreamContext, naming: Naming
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    messages = _messages(naming, 120)
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, messages)
    relay = OutboxRelay(pool, js, pg_schema, batch_size=50)

    assert [await relay.relay_once() for _ in range(4)] == [50, 50, 20, 0]

    assert await _stream_ids(js, naming) == [m.event_id for m in messages]
    assert await relay.pending() == 0


async def test_rolled_back_transaction_publishes_nothing(
    pool: asyncpg.Pool, pg_schema: str, js: JetStreamContext, naming: Naming
) -> None:
    await _prepare(pool, pg_schema, js, naming)

    async def failing_change() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, _messages(naming, 3))
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await OutboxRelay(pool, js, pg_schema).relay_once() == 0
    assert await _stream_ids(js, naming) == []


@pytest.mark.parametrize("crash_point", ["outbox.after_publish", "outbox.after_delete"])
async def test_relay_killed_between_commit_and_publish_delivers_exactly_once_after_restart(
    infra: Infra,
    pool: asyncpg.Pool,
    pg_schema: str,
    js: JetStreamContext,
    naming: Naming,
    worker: Callable[..., Any],
    crash_point: str,
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    messages = _messages(naming, 40)
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, messages)
    args = {"dsn": infra.pg_dsn, "schema": pg_schema, "nats_url": infra.nats_url}

    # A relay process dies by SIGKILL after JetStream stored the batch, before the rows
    # were deleted: the outbox still holds every row.
    code, _ = await worker("relay", args, failpoints=f"{crash_point}=kill")
    assert code == -9
    assert await OutboxRelay(pool, js, pg_schema).pending() == 40

    code, out = await worker("relay", args)

    assert code == 0
    assert out[-1] == {"relayed": 40}
    assert await _stream_ids(js, naming) == [m.event_id for m in messages]  # once each, in order


async def test_relay_killed_before_publishing_loses_nothing(
    infra: Infra,
    pool: asyncpg.Pool,
    pg_schema: str,
    js: JetStreamContext,
    naming: Naming,
    worker: Callable[..., Any],
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    messages = _messages(naming, 10)
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, messages)
    args = {"dsn": infra.pg_dsn, "schema": pg_schema, "nats_url": infra.nats_url}

    code, _ = await worker("relay", args, failpoints="outbox.before_publish=kill")
    assert code == -9
    assert await _stream_ids(js, naming) == []

    code, _ = await worker("relay", args)

    assert code == 0
    assert await _stream_ids(js, naming) == [m.event_id for m in messages]


async def test_running_relay_is_woken_by_a_commit(
    pool: asyncpg.Pool, pg_schema: str, js: JetStreamContext, naming: Naming
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    # A long poll interval: only the NOTIFY wake-up can make this test pass in time.
    relay = OutboxRelay(pool, js, pg_schema, poll_seconds=60.0)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: _listening(pool, relay.channel), message="relay listening")
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, _messages(naming, 5))

        async def published() -> bool:
            return len(await _stream_ids(js, naming)) == 5

        await wait_until(published, timeout=5, message="5 events published")
    finally:
        await relay.stop()
        await asyncio.wait_for(task, 10)


async def _listening(pool: asyncpg.Pool, channel: str) -> bool:
    """Whether some connection has issued LISTEN on ``channel`` (it is not ours to ask)."""
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE $1", f"%LISTEN%{channel}%"
        )
    return count > 0
