"""The inbox: a redelivered message changes a projection once; poison goes to dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from tailor_core.bus import ConsumerSpec, platform_streams, provision_streams
from tailor_core.inbox import InboundMessage, InboxConsumer
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


async def _prepare(pool: asyncpg.Pool, schema: str, js: JetStreamContext, naming: Naming) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, schema, [*core_migrations(), PROJECTION])
    await provision_streams(js, platform_streams(naming))


async def _publish(js: JetStreamContext, naming: Naming, count: int, prefix: str = "e") -> None:
    for i in range(count):
        await js.publish(
            naming.event_subject(f"user-{i % 5}", "Order Completed"),
            f"order-{i}".encode(),
            headers={"Nats-Msg-Id": f"{prefix}-{i}"},
        )


async def _projection(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id, hits FROM projection")
    return {row["event_id"]: row["hits"] for row in rows}


async def test_message_redelivered_after_a_crash_changes_the_projection_once(
    infra: Infra,
    pool: asyncpg.Pool,
    pg_schema: str,
    js: JetStreamContext,
    naming: Naming,
    worker: Callable[..., Any],
    worker_process: Callable[..., Any],
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    await _publish(js, naming, 30)
    args = {
        "dsn": infra.pg_dsn,
        "schema": pg_schema,
        "nats_url": infra.nats_url,
        "namespace": naming.namespace,
        "durable": "projector",
        "ack_wait": 1.0,
    }
    # The consumer commits the projection and the inbox, then dies before acknowledging:
    # JetStream redelivers every one of those messages.
    code, _ = await worker("consume", args, failpoints="inbox.after_commit=kill")
    assert code == -9
    committed = await _projection(pool)
    assert committed, "the killed consumer committed its first batch"

    restarted = await worker_process("consume", args)
    await wait_until(lambda: _has_all(pool, 30), message="all 30 projected")
    await wait_until(lambda: _all_acked(js, naming), message="all acknowledged")
    restarted.terminate()
    code, out = await restarted.finish()

    assert code == 0, "the consumer shuts down cleanly on SIGTERM"
    projection = await _projection(pool)
    assert set(projection) == {f"e-{i}" for i in range(30)}
    assert set(projection.values()) == {1}, "a redelivered message was counted twice"
    # the restarted consumer saw the redeliveries and skipped them through the inbox
    assert out[-1]["duplicates"] == len(committed)
    assert out[-1]["processed"] == 30 - len(committed)


async def _has_all(pool: asyncpg.Pool, count: int) -> bool:
    return len(await _projection(pool)) == count


async def _all_acked(js: JetStreamContext, naming: Naming) -> bool:
    info = await js.consumer_info(naming.stream_name(Stream.EVENTS), "projector")
    return info.num_ack_pending == 0 and info.num_pending == 0


async def test_poison_message_is_dead_lettered_with_its_error_and_others_go_on(
    pool: asyncpg.Pool, pg_schema: str, js: JetStreamContext, naming: Naming
) -> None:
    await _prepare(pool, pg_schema, js, naming)
    await _publish(js, naming, 5)

    async def handler(conn: asyncpg.Connection, message: InboundMessage) -> None:
        if message.event_id == "e-2":
            raise ValueError("cannot parse order")
        await conn.execute(
            "INSERT INTO projection VALUES ($1, $2, 1)", message.event_id, message.subject
        )

    consumer = InboxConsumer(
        pool=pool,
        js=js,
        spec=ConsumerSpec(
            stream=naming.stream_name(Stream.EVENTS),
            durable="fragile",
            filter_subject=naming.all_subjects(Stream.EVENTS),
            max_deliver=3,
        ),
        handler=handler,
        dead_letter_subject=naming.dead_letter_subject("test", "fragile"),
        retry_delay_seconds=0.05,
        fetch_timeout_seconds=0.2,
    )
    task = asyncio.create_task(consumer.run())
    try:
        dead_letters = naming.stream_name(Stream.DEADLETTER)

        async def dead_lettered() -> bool:
            return (await js.stream_info(dead_letters)).state.messages == 1

        await wait_until(dead_lettered, message="poison message dead-lettered")
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, 10)

    assert set(await _projection(pool)) == {"e-0", "e-1", "e-3", "e-4"}
    dead = await js.get_msg(dead_letters, 1)
    assert dead.data == b"order-2"
    assert dead.headers is not None
    assert dead.headers["Tailor-Event-Id"] == "e-2"
    assert dead.headers["Tailor-Error"] == "ValueError: cannot parse order"
    assert consumer.dead_lettered_total == 1
