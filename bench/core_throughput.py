"""Throughput of the core's delivery machinery against the raw limits, measured in one run.

* outbox relay (Postgres rows -> JetStream, with Nats-Msg-Id) vs raw nats-py JetStream
  publishing of the same messages with the same concurrency;
* inbox consumer (JetStream -> projection row + inbox row per event, one transaction a
  batch) vs raw asyncpg batched inserts of the same rows.

Prints a table (or --json). Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers.
Figures are for reading, never for pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from tailor_core.bus import (
    ConsumerSpec,
    connect,
    delete_streams,
    platform_streams,
    provision_streams,
)
from tailor_core.db import Connection, create_pool
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.migrations import Migration, core_migrations, migrate
from tailor_core.outbox import OutboundMessage, OutboxRelay, enqueue
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra, test_infra
from tailor_core.testing.waiting import wait_until

PROJECTION = Migration(
    "bench", 1, "projection", "CREATE TABLE projection (event_id text PRIMARY KEY, n int)"
)


def _messages(naming: Naming, count: int, tag: str) -> list[OutboundMessage]:
    return [
        OutboundMessage(
            event_id=f"{tag}-{i}",
            subject=naming.event_subject(f"user-{i % 997}", "Product Viewed"),
            payload=b"x" * 256,
        )
        for i in range(count)
    ]


async def _raw_publish(js: JetStreamContext, messages: list[OutboundMessage], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        await asyncio.gather(
            *(
                js.publish(m.subject, m.payload, headers={"Nats-Msg-Id": m.event_id})
                for m in messages[i : i + batch]
            )
        )
    return len(messages) / (time.perf_counter() - start)


async def _relay(
    pool: asyncpg.Pool,
    js: JetStreamContext,
    schema: str,
    messages: list[OutboundMessage],
    batch: int,
) -> float:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, messages)
    relay = OutboxRelay(pool, js, schema, batch_size=batch)
    start = time.perf_counter()
    while await relay.relay_once():
        pass
    return len(messages) / (time.perf_counter() - start)


async def _raw_inserts(pool: asyncpg.Pool, count: int, batch: int, tag: str) -> float:
    rows = [(f"{tag}-{i}", i) for i in range(count)]
    start = time.perf_counter()
    for i in range(0, count, batch):
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany("INSERT INTO projection VALUES ($1, $2)", rows[i : i + batch])
    return count / (time.perf_counter() - start)


async def _consume(
    pool: asyncpg.Pool, js: JetStreamContext, naming: Naming, count: int, batch: int, durable: str
) -> float:
    async def project(conn: Connection, messages: Sequence[InboundMessage]) -> None:
        await conn.executemany(
            "INSERT INTO projection VALUES ($1, 1)", [(m.event_id,) for m in messages]
        )

    consumer = InboxConsumer(
        pool=pool,
        js=js,
        spec=ConsumerSpec(
            stream=naming.stream_name(Stream.EVENTS),
            durable=durable,
            filter_subject=naming.all_subjects(Stream.EVENTS),
            max_ack_pending=batch * 4,
        ),
        batch_handler=project,
        dead_letter_subject=naming.dead_letter_subject("bench", durable),
        batch_size=batch,
        fetch_timeout_seconds=0.5,
    )
    start = time.perf_counter()
    task = asyncio.create_task(consumer.run())

    async def caught_up() -> bool:
        return consumer.processed_total >= count

    await wait_until(caught_up, timeout=600, interval=0.005, message="consumer caught up")
    elapsed = time.perf_counter() - start
    await consumer.stop()
    await task
    return count / elapsed


async def _one_round(infra: Infra, count: int, batch: int) -> dict[str, float]:
    naming = Naming(namespace=f"b{uuid.uuid4().hex[:8]}", partitions=16)
    schema = f"b_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.pg_dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await create_pool(infra.pg_dsn, schema, max_size=4)
    nc = await connect(infra.nats_url, "bench")
    js = nc.jetstream()
    try:
        async with pool.acquire() as conn:
            await migrate(conn, schema, [*core_migrations(), PROJECTION])
        await provision_streams(js, platform_streams(naming))
        raw_publish = await _raw_publish(js, _messages(naming, count, "raw"), batch)
        relay = await _relay(pool, js, schema, _messages(naming, count, "relay"), batch)
        raw_insert = await _raw_inserts(pool, count, batch, "raw")
        async with pool.acquire() as conn:
            await conn.execute("TRUNCATE projection")
        consume = await _consume(pool, js, naming, 2 * count, batch, "bench")
    finally:
        await delete_streams(js, [s.name for s in platform_streams(naming)])
        await nc.drain()
        await pool.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    return {
        "raw_js_publish_per_s": raw_publish,
        "outbox_relay_per_s": relay,
        "outbox_ratio": relay / raw_publish,
        "raw_pg_rows_per_s": raw_insert,
        "inbox_consume_per_s": consume,
        "inbox_ratio": consume / raw_insert,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        rounds = []
        for i in range(args.rounds):
            rounds.append(await _one_round(infra, args.events, args.batch))
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {
        "events": args.events,
        "batch": args.batch,
        "rounds": args.rounds,
        "infra": infra.source,
        "median": medians,
    }


def _print_table(result: dict[str, Any]) -> None:
    m = result["median"]
    print(
        f"core throughput — {result['events']} events, batch {result['batch']}, "
        f"median of {result['rounds']} rounds, infra: {result['infra']}"
    )
    print(f"{'path':<34}{'events/s':>12}{'ratio to raw':>14}")
    print(f"{'raw JetStream publish (nats-py)':<34}{m['raw_js_publish_per_s']:>12,.0f}{'1.00':>14}")
    print(f"{'outbox relay':<34}{m['outbox_relay_per_s']:>12,.0f}{m['outbox_ratio']:>14.2f}")
    print(f"{'raw asyncpg batched inserts':<34}{m['raw_pg_rows_per_s']:>12,.0f}{'1.00':>14}")
    inbox = m["inbox_consume_per_s"]
    print(f"{'inbox consumer (projection)':<34}{inbox:>12,.0f}{m['inbox_ratio']:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)


if __name__ == "__main__":
    main()
