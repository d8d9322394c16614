"""Profile projection figures: events/s through the live projection code (with its locks,
dedup and change events into the outbox) and through the replay path (no publishing), each
against raw asyncpg batched upserts of the same profile rows measured in the same run.

Runs in-process against a fresh schema. Uses TAILOR_PG_DSN, else embedded Postgres.
Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor_core.db import create_pool
from tailor_core.envelopes import customer_event_envelope
from tailor_core.migrations import core_migrations, load_migrations, migrate
from tailor_core.streams import Naming
from tailor_core.testing.infra import test_infra
from tailor_profile.adapters.repository import PROJECTION_TABLES, REBUILD
from tailor_profile.projection import ProfileProjection

BATCH = 500


def order(run: str, n: int, subjects: int) -> events_pb2.Envelope:
    event = events_pb2.CustomerEvent(
        message_id=f"{run}-{n}",
        user_id=f"customer-{n % subjects}",
        source_id="bench",
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=f"{run}-{n}",
                products=[
                    events_pb2.Product(
                        product_id=f"8512{line}A",
                        category="Home/Candles",
                        price=common_pb2.Money(amount="2.55", currency="GBP"),
                        quantity=6,
                    )
                    for line in range(3)
                ],
                revenue=common_pb2.Money(amount="45.90", currency="GBP"),
            ),
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    event.context.channel = "web"
    return customer_event_envelope(event, received_at=datetime.now(UTC))


async def projection_rate(
    pool: asyncpg.Pool,
    projection: ProfileProjection,
    run: str,
    n: int,
    subjects: int,
    *,
    lock: bool,
) -> float:
    envelopes = [order(run, i, subjects) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        chunk = [(e.id, e) for e in envelopes[start : start + BATCH]]
        async with pool.acquire() as conn, conn.transaction():
            await projection.apply(conn, chunk, lock=lock)
    return n / (time.perf_counter() - started)


async def raw_rate(pool: asyncpg.Pool, n: int, subjects: int) -> float:
    """The raw limit: one batched upsert per 500 events of rows the size the projection writes."""
    async with pool.acquire() as conn:
        sample = await conn.fetchrow("SELECT state, search FROM profiles LIMIT 1")
    assert sample is not None, "the projection ran first"
    state, search = sample["state"], sample["search"]
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        rows = {f"raw-{i % subjects}" for i in range(start, min(start + BATCH, n))}
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO profiles (profile_id, version, state, search) VALUES ($1, 1, $2, $3) "
                "ON CONFLICT (profile_id) DO UPDATE SET state = excluded.state, "
                "search = excluded.search, version = profiles.version + 1",
                [(pid, state, search) for pid in rows],
            )
    return n / (time.perf_counter() - started)


async def main(events: int, subjects: int, rounds: int, as_json: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(infra.pg_dsn)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        pool = await create_pool(infra.pg_dsn, schema, max_size=4)
        try:
            async with pool.acquire() as conn:
                await migrate(
                    conn,
                    schema,
                    [*core_migrations(), *load_migrations("profile", "tailor_profile.migrations")],
                )
                for table in PROJECTION_TABLES:
                    await conn.execute(f"CREATE TABLE rebuild_{table} (LIKE {table} INCLUDING ALL)")
            naming = Naming(schema, 16)
            live = ProfileProjection(naming=naming, schema=schema, currency="GBP")
            replay = ProfileProjection(
                naming=naming, schema=schema, currency="GBP", tables=REBUILD, publish=False
            )
            figures: dict[str, list[float]] = {"live": [], "replay": [], "raw": []}
            for r in range(rounds):
                figures["live"].append(
                    await projection_rate(pool, live, f"l{r}", events, subjects, lock=True)
                )
                figures["replay"].append(
                    await projection_rate(pool, replay, f"r{r}", events, subjects, lock=False)
                )
                figures["raw"].append(await raw_rate(pool, events, subjects))
        finally:
            await pool.close()
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    result: dict[str, Any] = {
        "profile_events_per_s": round(medians["live"]),
        "profile_replay_events_per_s": round(medians["replay"]),
        "raw_pg_rows_per_s": round(medians["raw"]),
        "profile_ratio": round(medians["live"] / medians["raw"], 2),
        "profile_replay_ratio": round(medians["replay"] / medians["raw"], 2),
        "events": events,
        "subjects": subjects,
        "rounds": rounds,
        "infra": infra.source,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"profile projection, {events} Order Completed events over {subjects} subjects, "
        f"median of {rounds} rounds ({infra.source} Postgres)"
    )
    print(f"{'path':<34}{'events/s':>12}{'ratio':>8}")
    print(f"{'raw asyncpg batched upserts':<34}{result['raw_pg_rows_per_s']:>12,}{1.0:>8.2f}")
    for label, rate, ratio in (
        ("live projection (+ outbox)", "profile_events_per_s", "profile_ratio"),
        ("replay (rebuild)", "profile_replay_events_per_s", "profile_replay_ratio"),
    ):
        print(f"{label:<34}{result[rate]:>12,}{result[ratio]:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.subjects, args.rounds, args.json))
