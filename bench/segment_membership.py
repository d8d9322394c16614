"""Segment membership figures, each next to the raw limit measured in the same run:

1. evaluation — events/s and evaluations/s of the real membership engine and EVENTS handler
   with 100 active segments of mixed kinds, applied in-process to batches of envelopes inside
   transactions on a fresh schema, against raw asyncpg batched inserts of the same event-fact
   rows plus the membership rows the engine wrote. Consent is answered by an in-process
   stand-in that allows everything (a benchmark, not a test: no consent RPC is timed here).
2. latency — ingest Track → SegmentEntered on the SEGMENT stream at a fixed rate, each event
   making a new subject enter, against plain JetStream publish → consumer at the same rate.
3. clock — lag from the moment a subject's window expires (event time + window) to the arrival
   of its SegmentExited (WINDOW_EXPIRED), with the segment clock interval it ran with.

Parts 2 and 3 run consent, ingest, profile and segment as their own processes. Uses
TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers; talks only to 127.0.0.1 and stops by
itself. Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
import orjson
from nats.js.api import DeliverPolicy

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.events.v1 import platform_events_pb2 as platform_events
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import StreamSpec, connect, delete_streams, platform_streams, provision_streams
from tailor_core.consent_client import ConsentAnswer, ConsentClient
from tailor_core.db import Connection, create_pool
from tailor_core.envelopes import customer_event_envelope, parse
from tailor_core.inbox import InboundMessage
from tailor_core.migrations import core_migrations, load_migrations, migrate
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra, test_infra
from tailor_core.testing.services import ServiceGroup
from tailor_segment.adapters import definitions, facts
from tailor_segment.consumers import EventsHandler
from tailor_segment.domain import rule_text, rules
from tailor_segment.domain.evaluation import event_fact
from tailor_segment.membership import Cause, Definitions, MembershipEngine, Outcome, Targets

SECRET = "m" * 40
SOURCE = "bench-segment"
PURPOSE = "marketing"  # segments' default purpose; events are collected for analytics
GRANTS_IN_FLIGHT = 50
BATCH_RPC = 500

# --- a catalogue and the 100 segments --------------------------------------------------------

CATEGORIES = ("Home/Candles", "Home/Kitchen", "Gifts/Bags", "Garden")
#: (product id, category, unit price in GBP)
PRODUCTS = tuple(
    (f"{code}", CATEGORIES[n % len(CATEGORIES)], 1.25 + (n * 0.85) % 9)
    for n, code in enumerate(
        (
            "85123A",
            "71053",
            "84406B",
            "84029G",
            "84029E",
            "22752",
            "21730",
            "22633",
            "22632",
            "84879",
            "22745",
            "22748",
            "22749",
            "22310",
            "84969",
            "22623",
            "22622",
            "21754",
            "21755",
            "21777",
        )
    )
)


def _slug(category: str) -> str:
    return category.lower().replace("/", "-")


def segment_catalogue() -> list[tuple[str, str]]:
    """100 (segment id, rule text) of mixed kinds: 30 event counts with filters over windows,
    15 sums, 15 absences, 15 sequences, 15 trait comparisons and 10 segment references."""
    found: list[tuple[str, str]] = []
    windows = ("1h", "24h", "7d")
    for n, (product_id, _, _) in enumerate(PRODUCTS[:12]):
        found.append(
            (
                f"viewed-{product_id.lower()}",
                f'event "Product Viewed" where product.product_id = "{product_id}" '
                f"count >= {1 + n % 3} within {windows[n % 3]}",
            )
        )
    for category in CATEGORIES:
        found.append(
            (
                f"browsing-{_slug(category)}",
                f'event "Product Viewed" where product.category = "{category}" '
                "and product.price.amount >= 2 count >= 3 within 7d",
            )
        )
        found.append(
            (
                f"adding-{_slug(category)}",
                f'event "Product Added" where product.category = "{category}" within 3d',
            )
        )
    for k in range(1, 6):
        found.append((f"orders-{k}-30d", f'event "Order Completed" count >= {k} within 30d'))
        found.append((f"adds-{k + 1}-24h", f'event "Product Added" count >= {k + 1} within 24h'))
    for threshold in (10, 20, 30, 50, 75, 100, 150, 200):
        found.append(
            (
                f"spent-{threshold}-30d",
                f'event "Order Completed" sum order.revenue.amount > {threshold} within 30d',
            )
        )
    for threshold in (5, 10, 25, 40, 60, 80, 120):
        found.append(
            (
                f"spent-{threshold}-7d",
                f'event "Order Completed" sum order.revenue.amount > {threshold} within 7d',
            )
        )
    for category in CATEGORIES:
        found.append(
            (
                f"lapsed-{_slug(category)}",
                f'event "Product Viewed" where product.category = "{category}" count >= 2 '
                f'within 7d and absent "Product Viewed" where product.category = "{category}" '
                "within 6h",
            )
        )
    for days in (1, 2, 3, 5, 7, 14):
        found.append(
            (
                f"no-order-{days}d",
                f'event "Product Viewed" count >= 2 within 7d and absent "Order Completed" '
                f"within {days}d",
            )
        )
    for hours in (1, 6, 12, 24, 48):
        found.append((f"quiet-{hours}h", f'absent "Product Viewed" within {hours}h'))
    for within in ("30m", "1h", "2h", "6h", "24h"):
        found.append(
            (
                f"abandoned-{within}",
                f'sequence "Product Added" then not "Order Completed" within {within}',
            )
        )
    for category in CATEGORIES:
        found.append(
            (
                f"view-then-add-{_slug(category)}",
                f'sequence "Product Viewed" where product.category = "{category}" '
                'then "Product Added" within 1h correlate on product.product_id',
            )
        )
        found.append(
            (
                f"add-then-buy-{_slug(category)}",
                f'sequence "Product Added" where product.category = "{category}" '
                'then "Order Completed" within 24h',
            )
        )
    for product_id, _, _ in PRODUCTS[:2]:
        found.append(
            (
                f"viewed-not-added-{product_id.lower()}",
                f'sequence "Product Viewed" where product.product_id = "{product_id}" '
                f'then not "Product Added" where product.product_id = "{product_id}" within 10m',
            )
        )
    for k in range(1, 6):
        found.append((f"lifetime-orders-{k}", f"trait computed.orders_lifetime >= {k}"))
    for category in CATEGORIES:
        found.append(
            (
                f"fan-{_slug(category)}",
                f'trait computed.favourite_categories contains "{category}"',
            )
        )
    for k in range(1, 4):
        found.append(
            (
                f"loyal-active-{k}",
                f"trait computed.orders_lifetime >= {k} "
                'and event "Product Viewed" count >= 2 within 24h',
            )
        )
    for category in CATEGORIES[:3]:
        found.append(
            (
                f"fan-browsing-{_slug(category)}",
                f'trait computed.favourite_categories contains "{category}" and '
                f'event "Product Viewed" where product.category = "{category}" within 24h',
            )
        )
    references = (
        ("vip-lapsed", 'in segment "spent-100-30d" and in segment "no-order-7d"'),
        ("loyal-not-spending", 'in segment "lifetime-orders-3" and not in segment "spent-50-30d"'),
        ("cart-fans", 'in segment "abandoned-2h" and in segment "fan-home-candles"'),
        (
            "candle-prospects",
            'in segment "browsing-home-candles" and not in segment "orders-1-30d"',
        ),
        ("big-basket", 'in segment "adds-3-24h" or in segment "spent-75-7d"'),
        ("win-back", 'in segment "quiet-24h" and in segment "lifetime-orders-2"'),
        ("hot-lead", 'in segment "loyal-active-1" and in segment "abandoned-1h"'),
        ("kitchen-buyers", 'in segment "add-then-buy-home-kitchen" and in segment "spent-20-30d"'),
        ("garden-curious", 'in segment "view-then-add-garden" and not in segment "fan-garden"'),
        ("vip-win-back", 'in segment "vip-lapsed" or in segment "win-back"'),
    )
    found.extend(references)
    assert len(found) == 100, len(found)
    return found


def customer_event(
    run: str, n: int, subject: str, kind: str, product: int, at: datetime
) -> events_pb2.CustomerEvent:
    """A Product Viewed, Product Added or Order Completed (one to three lines) at ``at``."""

    def line(index: int, quantity: int = 1) -> events_pb2.Product:
        product_id, category, price = PRODUCTS[index % len(PRODUCTS)]
        return events_pb2.Product(
            product_id=product_id,
            name="WHITE HANGING HEART T-LIGHT HOLDER",
            category=category,
            price=common_pb2.Money(amount=f"{price:.2f}", currency="GBP"),
            quantity=quantity,
        )

    if kind == "Order Completed":
        lines = [line(product + k, quantity=1 + (n + k) % 4) for k in range(1 + n % 3)]
        revenue = sum(float(p.price.amount) * p.quantity for p in lines)
        track = events_pb2.Track(
            event=kind,
            order=events_pb2.OrderEvent(
                order_id=f"{run}-{n}",
                products=lines,
                revenue=common_pb2.Money(amount=f"{revenue:.2f}", currency="GBP"),
            ),
        )
    else:
        track = events_pb2.Track(event=kind, product=events_pb2.ProductEvent(product=line(product)))
    event = events_pb2.CustomerEvent(
        message_id=f"{run}-{n}", user_id=subject, source_id=SOURCE, track=track
    )
    event.timestamp.FromDatetime(at)
    event.context.locale = "en-GB"
    event.context.channel = "web"
    return event


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- 1. evaluation, in-process ---------------------------------------------------------------


class AllowingConsent:
    """In-process stand-in for the consent client: every (subject, purpose) is allowed.
    A benchmark shortcut (no consent RPC or cache in the timed path), not a test fake."""

    async def check_many(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], ConsentAnswer]:
        return dict.fromkeys(pairs, ConsentAnswer(True, "granted", cached=True))


class CountingEngine(MembershipEngine):
    """The real engine, adding up what each evaluation did."""

    evaluated = 0
    entered = 0
    exited = 0

    async def evaluate(
        self,
        conn: Connection,
        targets: Targets,
        now: datetime,
        cause: Cause,
        *,
        consent: Mapping[tuple[str, str], bool] | None = None,
    ) -> Outcome:
        outcome = await super().evaluate(conn, targets, now, cause, consent=consent)
        self.evaluated += outcome.evaluated
        self.entered += outcome.entered
        self.exited += outcome.exited
        return outcome


async def create_segments(conn: Connection) -> None:
    """The catalogue through the definitions adapter, already ACTIVE (no backfill)."""
    now = datetime.now(UTC)
    for segment_id, text in segment_catalogue():
        rule = rule_text.parse(text)
        await definitions.create(
            conn,
            definitions.StoredSegment(
                segment_id=segment_id,
                version=1,
                state="ACTIVE",
                name=segment_id,
                description="",
                rule=rules.to_proto(rule).SerializeToString(deterministic=True),
                rule_text=rule_text.render(rule),
                purpose=PURPOSE,
                references=tuple(sorted(rules.referenced_segments(rule))),
                created_at=now,
                updated_at=now,
                updated_by="bench",
                current_version=1,
            ),
        )


@dataclass
class RoundEvents:
    """Envelopes of one round, as inbox messages, in batches of the consumer's size."""

    first_seen: list[list[InboundMessage]]
    steady: list[list[InboundMessage]]
    subjects: list[str]


def round_stream(run: str, events: int, subjects: int, batch: int, seed: int) -> RoundEvents:
    """One first event per subject a day ago, then ``events`` events over the last 24 hours
    in time order: 70% Product Viewed, 20% Product Added, 10% Order Completed, subjects and
    products drawn at random."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    people = [f"{run}-customer-{n}" for n in range(subjects)]
    first = [
        customer_event(
            run, n, s, "Product Viewed", rng.randrange(len(PRODUCTS)), now - timedelta(hours=25)
        )
        for n, s in enumerate(people)
    ]
    span = timedelta(hours=24)
    kinds = rng.choices(
        ("Product Viewed", "Product Added", "Order Completed"), (70, 20, 10), k=events
    )
    steady = [
        customer_event(
            run,
            subjects + n,
            rng.choice(people),
            kind,
            rng.randrange(len(PRODUCTS)),
            now - span + span * (n / events),
        )
        for n, kind in enumerate(kinds)
    ]

    def batches(found: list[events_pb2.CustomerEvent]) -> list[list[InboundMessage]]:
        messages = []
        for sequence, event in enumerate(found):
            envelope = customer_event_envelope(event, received_at=now)
            messages.append(
                InboundMessage(
                    event_id=envelope.id,
                    subject=f"events.0.{run}.track",
                    data=envelope.SerializeToString(),
                    headers={},
                    stream_sequence=sequence,
                    delivery_count=1,
                )
            )
        return [messages[i : i + batch] for i in range(0, len(messages), batch)]

    return RoundEvents(batches(first), batches(steady), people)


async def give_traits(conn: Connection, subjects: Sequence[str], seed: int) -> None:
    """Profile traits as the PROFILE stream would have announced them (not timed)."""
    rng = random.Random(seed)
    for subject in subjects:
        await facts.update_traits(
            conn,
            subject,
            {
                "computed.orders_lifetime": rng.randrange(7),
                "computed.favourite_categories": rng.sample(CATEGORIES, rng.randrange(1, 3)),
            },
            [],
        )


@dataclass
class Applied:
    seconds: float
    events: int
    evaluated: int
    entered_per_batch: list[int]


async def apply(
    pool: asyncpg.Pool,
    handler: EventsHandler,
    engine: CountingEngine,
    batches: list[list[InboundMessage]],
) -> Applied:
    evaluated_before = engine.evaluated
    entered: list[int] = []
    started = time.perf_counter()
    for chunk in batches:
        before = engine.entered
        async with pool.acquire() as conn, conn.transaction():
            await handler(conn, chunk)
        entered.append(engine.entered - before)
    seconds = time.perf_counter() - started
    return Applied(
        seconds, sum(len(c) for c in batches), engine.evaluated - evaluated_before, entered
    )


async def raw_rate(
    pool: asyncpg.Pool, batches: list[list[InboundMessage]], entered: list[int]
) -> float:
    """The raw limit: per batch, one executemany of the same event-fact rows and one of as
    many membership rows as the engine entered for it, into copies of the two tables."""
    prepared = []
    for n, chunk in enumerate(batches):
        rows = []
        for message in chunk:
            event = parse(message.data).customer_event
            fact = event_fact(event)
            assert fact is not None
            rows.append(
                (
                    f"raw/{message.event_id}",
                    event.user_id,
                    fact.name,
                    fact.at,
                    orjson.dumps(dict(fact.fields)).decode(),
                )
            )
        members = [
            (f"raw-{n}-{k}", rows[k % len(rows)][1], datetime.now(UTC), 1, "count of x = 1", 1)
            for k in range(entered[n])
        ]
        prepared.append((rows, members))
    started = time.perf_counter()
    for rows, members in prepared:
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO raw_subject_events (event_id, subject_id, name, at, fields) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
                rows,
            )
            if members:
                await conn.executemany(
                    "INSERT INTO raw_memberships (segment_id, subject_id, entered_at, reason, "
                    "explanation, segment_version) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT (segment_id, subject_id) DO NOTHING",
                    members,
                )
    return sum(len(c) for c in batches) / (time.perf_counter() - started)


async def evaluation_part(infra: Infra, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.pg_dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await create_pool(infra.pg_dsn, schema, max_size=4)
    figures: dict[str, list[float]] = {
        "steady": [],
        "steady_evaluations": [],
        "first_seen": [],
        "first_seen_evaluations": [],
        "raw": [],
        "entered": [],
    }
    try:
        async with pool.acquire() as conn:
            await migrate(
                conn,
                schema,
                [*core_migrations(), *load_migrations("segment", "tailor_segment.migrations")],
            )
            for table in ("subject_events", "memberships"):
                await conn.execute(f"CREATE TABLE raw_{table} (LIKE {table} INCLUDING ALL)")
            await create_segments(conn)
        engine = CountingEngine(
            consent=cast(ConsentClient, AllowingConsent()),
            naming=Naming(schema, 16),
            definitions=Definitions(),
        )
        handler = EventsHandler(engine)
        for r in range(args.rounds):
            stream = round_stream(f"r{r}", args.events, args.subjects, args.batch, seed=r)
            first = await apply(pool, handler, engine, stream.first_seen)
            async with pool.acquire() as conn:
                await give_traits(conn, stream.subjects, seed=r)
            steady = await apply(pool, handler, engine, stream.steady)
            figures["first_seen"].append(first.events / first.seconds)
            figures["first_seen_evaluations"].append(first.evaluated / first.seconds)
            figures["steady"].append(steady.events / steady.seconds)
            figures["steady_evaluations"].append(steady.evaluated / steady.seconds)
            figures["entered"].append(sum(steady.entered_per_batch))
            figures["raw"].append(await raw_rate(pool, stream.steady, steady.entered_per_batch))
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM outbox")  # no relay runs here
    finally:
        await pool.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    return {
        "segments": 100,
        "events_per_round": args.events,
        "subjects": args.subjects,
        "batch": args.batch,
        "rounds": args.rounds,
        "consent": "in-process stand-in allowing every pair (no consent RPC timed)",
        "events_per_s": medians["steady"],
        "evaluations_per_s": medians["steady_evaluations"],
        "first_seen_events_per_s": medians["first_seen"],
        "first_seen_evaluations_per_s": medians["first_seen_evaluations"],
        "entries_per_round": medians["entered"],
        "raw_pg_events_per_s": medians["raw"],
        "ratio": medians["steady"] / medians["raw"],
        "first_seen_ratio": medians["first_seen"] / medians["raw"],
    }


# --- 2. and 3., through the services ---------------------------------------------------------


def bearer(*scopes: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(SECRET, 'bench', 'compliance', scopes)}"),)


@dataclass
class Arrivals:
    """When each key was sent and when its message arrived (perf_counter seconds)."""

    sent_at: dict[str, float] = field(default_factory=dict)
    latency_seconds: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, key: str, at: float | None = None) -> None:
        self.done.clear()
        self.sent_at[key] = time.perf_counter() if at is None else at

    def arrived(self, key: str, at: float) -> None:
        if key in self.sent_at and key not in self.latency_seconds:
            self.latency_seconds[key] = at - self.sent_at[key]
            if len(self.latency_seconds) == len(self.sent_at):
                self.done.set()

    @property
    def missing(self) -> int:
        return len(self.sent_at) - len(self.latency_seconds)

    async def wait(self, deadline_seconds: float) -> None:
        if self.missing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), deadline_seconds)

    def figures(self) -> dict[str, float]:
        ms = [s * 1000 for s in self.latency_seconds.values()]
        return {
            "sent": len(self.sent_at),
            "p50_ms": statistics.median(ms) if ms else float("nan"),
            "p99_ms": percentile(ms, 0.99),
            "max_ms": max(ms, default=float("nan")),
            "lost": self.missing,
        }


async def open_loop(
    rate: float, count: int, start: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start ``start(n)`` for n < count on a fixed schedule, whatever earlier ones are doing;
    returns the starts per second achieved."""
    began = time.perf_counter()
    running = []
    for n in range(count):
        wait = began + n / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        running.append(asyncio.create_task(start(n)))
    took = time.perf_counter() - began
    await asyncio.gather(*running)
    return count / took if took > 0 else float("nan")


@dataclass
class Services:
    group: ServiceGroup
    naming: Naming
    js: Any
    consent: grpc.aio.Channel
    ingest: grpc.aio.Channel
    segment: grpc.aio.Channel
    api_key: tuple[tuple[str, str], ...] = ()
    last_event_at: float = float("-inf")  # time.monotonic() of the last measured send

    async def grant(self, subjects: Sequence[str]) -> None:
        stub = consent_pb2_grpc.ConsentServiceStub(self.consent)
        officer = bearer("consent:write")
        for first in range(0, len(subjects), GRANTS_IN_FLIGHT):
            await asyncio.gather(
                *(
                    stub.GrantConsent(
                        consent_pb2.GrantConsentRequest(
                            subject_id=s,
                            purposes=["analytics", PURPOSE],
                            metadata=consent_pb2.DecisionMetadata(
                                source=consent_pb2.CONSENT_SOURCE_API
                            ),
                        ),
                        metadata=officer,
                    )
                    for s in subjects[first : first + GRANTS_IN_FLIGHT]
                )
            )

    async def create_segment(self, segment_id: str, text: str) -> None:
        stub = segment_pb2_grpc.SegmentServiceStub(self.segment)
        writer = bearer("segment:write", "segment:read")
        await stub.CreateSegment(
            segment_pb2.CreateSegmentRequest(
                segment_id=segment_id, name=segment_id, rule=segment_pb2.RuleInput(text=text)
            ),
            metadata=writer,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = await stub.GetSegment(
                segment_pb2.GetSegmentRequest(segment_id=segment_id), metadata=writer
            )
            if reply.segment.state == segment_pb2.SEGMENT_STATE_ACTIVE:
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"segment {segment_id} not ACTIVE within 30 s")

    async def batch(self, events: Sequence[events_pb2.CustomerEvent]) -> None:
        stub = ingest_pb2_grpc.IngestServiceStub(self.ingest)
        for first in range(0, len(events), BATCH_RPC):
            reply = await stub.Batch(
                ingest_pb2.BatchRequest(events=events[first : first + BATCH_RPC]),
                metadata=self.api_key,
            )
            refused = [r for r in reply.results if r.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED]
            if refused:
                raise SystemExit(f"ingest did not accept a warm-up event: {refused[0]}")

    async def caught_up(self, deadline_seconds: float) -> None:
        """Wait until every durable consumer of EVENTS and PROFILE (profile's and segment's)
        has had nothing pending on two looks in a row: the warm-up is fully processed."""
        deadline = time.monotonic() + deadline_seconds
        quiet = 0
        while time.monotonic() < deadline:
            busy = 0
            for stream in (Stream.EVENTS, Stream.PROFILE):
                for info in await self.js.consumers_info(self.naming.stream_name(stream)):
                    busy += info.num_pending + info.num_ack_pending
            quiet = quiet + 1 if busy == 0 else 0
            if quiet == 2:
                return
            await asyncio.sleep(0.5)
        raise SystemExit("the services did not process the warm-up events in time")

    def segment_changes(self, segment_id: str) -> str:
        return f"{self.naming.root(Stream.SEGMENT)}.{segment_id}.*.*"


def viewed(run: str, n: int, subject: str, product_id: str) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        message_id=f"{run}-{n}",
        user_id=subject,
        track=events_pb2.Track(
            event="Product Viewed",
            product=events_pb2.ProductEvent(
                product=events_pb2.Product(
                    product_id=product_id,
                    name="WHITE HANGING HEART T-LIGHT HOLDER",
                    category="Home/Candles",
                    price=common_pb2.Money(amount="2.55", currency="GBP"),
                )
            ),
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    event.context.locale = "en-GB"
    event.context.channel = "web"
    return event


LATENCY_SEGMENT = "viewed-heart"
LATENCY_RULE = 'event "Product Viewed" where product.product_id = "85123A" count >= 1 within 24h'


async def latency_path(services: Services, args: argparse.Namespace) -> dict[str, float]:
    """Warm-up: one other product's view per subject (subject known, consent answers cached
    in ingest and segment); then each subject's first view of 85123A, one subject after
    another at ``args.rate``, timed Track → SegmentEntered."""
    count = int(args.rate * args.seconds)
    subjects = [f"lat-{n}" for n in range(count)]
    await services.grant(subjects)
    await services.create_segment(LATENCY_SEGMENT, LATENCY_RULE)
    await services.batch([viewed("lw", n, s, "71053") for n, s in enumerate(subjects)])
    await services.caught_up(90)
    arrivals = Arrivals()

    async def on_change(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("segment_entered"):
            arrivals.arrived(envelope.segment_entered.subject_id, at)

    # The same sends timed to their arrival on EVENTS: the part of the latency that is
    # ingest's, so that the rest can be put down to the segment service and its outbox.
    accepted = Arrivals()

    async def on_event(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("customer_event"):
            accepted.arrived(envelope.customer_event.user_id, at)

    watcher = await services.js.subscribe(
        services.segment_changes(LATENCY_SEGMENT), cb=on_change, ordered_consumer=True
    )
    events_watcher = await services.js.subscribe(
        services.naming.all_subjects(Stream.EVENTS),
        cb=on_event,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    stub = ingest_pb2_grpc.IngestServiceStub(services.ingest)
    refused = 0

    async def send(n: int) -> None:
        nonlocal refused
        event = viewed("lm", n, subjects[n], "85123A")
        arrivals.sent(subjects[n])
        accepted.sent(subjects[n], arrivals.sent_at[subjects[n]])
        reply = await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=services.api_key)
        refused += reply.result.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED

    try:
        achieved = await open_loop(args.rate, count, send)
        services.last_event_at = time.monotonic()
        await arrivals.wait(args.deadline)
        await accepted.wait(1.0)
    finally:
        await watcher.unsubscribe()
        await events_watcher.unsubscribe()
    ingest_stage = accepted.figures()
    return arrivals.figures() | {
        "achieved_rate_per_s": achieved,
        "not_accepted": refused,
        "to_events_p50_ms": ingest_stage["p50_ms"],
        "to_events_p99_ms": ingest_stage["p99_ms"],
    }


async def raw_latency_path(services: Services, args: argparse.Namespace) -> dict[str, float]:
    """The raw limit: envelopes of the size ingest publishes, straight to JetStream at the same
    rate, timed publish → delivery to an ephemeral ordered consumer."""
    stream = f"{services.naming.namespace.upper()}_RAWSEGMENT"
    prefix = f"{services.naming.namespace}.rawsegment"
    await provision_streams(services.js, [StreamSpec(name=stream, subjects=(f"{prefix}.>",))])
    arrivals = Arrivals()

    async def on_delivery(message: Any) -> None:
        arrivals.arrived(message.headers["Nats-Msg-Id"], time.perf_counter())

    watcher = await services.js.subscribe(f"{prefix}.>", cb=on_delivery, ordered_consumer=True)
    received = datetime.now(UTC)

    async def publish(n: int) -> None:
        event = viewed("raw", n, f"raw-{n}", "85123A")
        event.source_id = SOURCE
        envelope = customer_event_envelope(event, received_at=received)
        arrivals.sent(envelope.id)
        await services.js.publish(
            f"{prefix}.{n % services.naming.partitions}",
            envelope.SerializeToString(),
            headers={"Nats-Msg-Id": envelope.id},
        )

    try:
        achieved = await open_loop(args.rate, int(args.rate * args.seconds), publish)
        await arrivals.wait(args.deadline)
    finally:
        await watcher.unsubscribe()
        await delete_streams(services.js, [stream])
    return arrivals.figures() | {"achieved_rate_per_s": achieved}


CLOCK_SEGMENT = "recent-viewer"
CLOCK_WINDOW_SECONDS = 5.0
CLOCK_RULE = f'event "Product Viewed" within {CLOCK_WINDOW_SECONDS:.0f}s'


async def clock_path(services: Services, args: argparse.Namespace) -> dict[str, float]:
    """``args.clock_subjects`` subjects enter at known times (one view each, spread at
    ``args.clock_rate``); each is timed from event time + 5 s (wall clock, as the service
    computes the expiry) to its SegmentExited with reason WINDOW_EXPIRED."""
    subjects = [f"clk-{n}" for n in range(args.clock_subjects)]
    await services.grant(subjects)
    # Views of the latency part still inside the window would enter the new segment by its
    # backfill and leave by the clock during the measurement: let them age first.
    settle = services.last_event_at + CLOCK_WINDOW_SECONDS + 1 - time.monotonic()
    if settle > 0:
        await asyncio.sleep(settle)
    await services.create_segment(CLOCK_SEGMENT, CLOCK_RULE)
    expiry: dict[str, float] = {}
    lag: dict[str, float] = {}
    entered: set[str] = set()
    other_exits = 0
    all_out = asyncio.Event()

    async def on_change(message: Any) -> None:
        nonlocal other_exits
        at = time.time()
        envelope = parse(message.data)
        if envelope.HasField("segment_entered"):
            if envelope.segment_entered.subject_id in expiry:
                entered.add(envelope.segment_entered.subject_id)
        elif envelope.HasField("segment_exited"):
            exited = envelope.segment_exited
            window_expired = platform_events.MEMBERSHIP_CHANGE_REASON_WINDOW_EXPIRED
            if exited.reason != window_expired:
                other_exits += 1
            elif exited.subject_id in expiry and exited.subject_id not in lag:
                lag[exited.subject_id] = at - expiry[exited.subject_id]
                if len(lag) == len(subjects):
                    all_out.set()

    watcher = await services.js.subscribe(
        services.segment_changes(CLOCK_SEGMENT), cb=on_change, ordered_consumer=True
    )
    stub = ingest_pb2_grpc.IngestServiceStub(services.ingest)

    async def send(n: int) -> None:
        event = viewed("ck", n, subjects[n], "22423")
        expiry[subjects[n]] = event.timestamp.ToDatetime(UTC).timestamp() + CLOCK_WINDOW_SECONDS
        await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=services.api_key)

    try:
        await open_loop(args.clock_rate, len(subjects), send)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_out.wait(), CLOCK_WINDOW_SECONDS + args.deadline)
    finally:
        await watcher.unsubscribe()
    ms = [s * 1000 for s in lag.values()]
    return {
        "subjects": len(subjects),
        "entered": len(entered),
        "exited_window_expired": len(lag),
        "other_exits": other_exits,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms, default=float("nan")),
        "min_ms": min(ms, default=float("nan")),
    }


async def service_parts(infra: Infra, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    group = ServiceGroup(
        infra,
        f"b{uuid.uuid4().hex[:8]}",
        SECRET,
        scratch,
        names=("consent", "ingest", "profile", "segment"),
    )
    for service in group.services.values():
        service.extra_env["TAILOR_LOG_LEVEL"] = "warning"
    group.services["segment"].extra_env["TAILOR_CLOCK_SECONDS"] = str(args.clock_seconds)
    await group.start()
    naming = Naming(group.namespace, 4)  # ServiceGroup runs every service with 4 partitions
    nc = await connect(infra.nats_url, "bench-segment-membership")
    js = nc.jetstream()
    found: dict[str, Any] = {"clock_seconds": args.clock_seconds}
    try:
        async with (
            grpc.aio.insecure_channel(group.services["consent"].address) as consent,
            grpc.aio.insecure_channel(group.services["ingest"].address) as ingest,
            grpc.aio.insecure_channel(group.services["segment"].address) as segment,
        ):
            services = Services(group, naming, js, consent, ingest, segment)
            created = await admin_pb2_grpc.IngestAdminServiceStub(ingest).CreateApiKey(
                admin_pb2.CreateApiKeyRequest(source_id=SOURCE), metadata=bearer("ingest:admin")
            )
            services.api_key = (("x-api-key", created.secret),)
            if args.only in (None, "latency"):
                found["raw"] = await raw_latency_path(services, args)
                found["segment"] = await latency_path(services, args)
            if args.only in (None, "clock"):
                found["clock"] = await clock_path(services, args)
    finally:
        await group.stop()
        await group.drop_schemas()
        await delete_streams(js, [s.name for s in platform_streams(naming)])
        await nc.drain()
    return found


# --- output ----------------------------------------------------------------------------------


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in values.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        result["infra"] = infra.source
        if args.only in (None, "evaluation"):
            result |= flatten("evaluation", await evaluation_part(infra, args))
        if args.only in (None, "latency", "clock"):
            parts = await service_parts(infra, Path(scratch), args)
            result["clock_seconds"] = parts["clock_seconds"]
            if "segment" in parts:
                result["latency_rate_per_s"] = args.rate
                result["latency_seconds"] = args.seconds
                result |= flatten("latency_raw", parts["raw"])
                result |= flatten("latency_segment", parts["segment"])
                result["latency_p50_ratio_to_raw"] = (
                    parts["segment"]["p50_ms"] / parts["raw"]["p50_ms"]
                )
                result["latency_p99_ratio_to_raw"] = (
                    parts["segment"]["p99_ms"] / parts["raw"]["p99_ms"]
                )
            if "clock" in parts:
                result["clock_window_seconds"] = CLOCK_WINDOW_SECONDS
                result |= flatten("clock", parts["clock"])
    return result


def print_table(r: Mapping[str, Any]) -> None:
    if "evaluation_events_per_s" in r:
        print(
            f"1. membership evaluation, 100 active segments, {r['evaluation_events_per_round']:,} "
            f"events over {r['evaluation_subjects']:,} subjects per round, "
            f"{r['evaluation_batch']} per transaction, median of {r['evaluation_rounds']} "
            f"rounds ({r['infra']} Postgres)"
        )
        print(f"   consent: {r['evaluation_consent']}")
        print(f"   {'path':<46}{'events/s':>10}{'evals/s':>10}{'ratio':>8}")
        print(
            f"   {'raw asyncpg: event facts + membership rows':<46}"
            f"{r['evaluation_raw_pg_events_per_s']:>10,.0f}{'':>10}{1.0:>8.2f}"
        )
        print(
            f"   {'engine, known subjects (steady stream)':<46}"
            f"{r['evaluation_events_per_s']:>10,.0f}{r['evaluation_evaluations_per_s']:>10,.0f}"
            f"{r['evaluation_ratio']:>8.2f}"
        )
        print(
            f"   {'engine, first event of a subject (all 100)':<46}"
            f"{r['evaluation_first_seen_events_per_s']:>10,.0f}"
            f"{r['evaluation_first_seen_evaluations_per_s']:>10,.0f}"
            f"{r['evaluation_first_seen_ratio']:>8.2f}"
        )
        print(f"   {r['evaluation_entries_per_round']:,.0f} entries per steady round")
    if "latency_segment_p50_ms" in r:
        print(
            f"2. ingest Track → SegmentEntered, {r['latency_rate_per_s']:.0f} events/s for "
            f"{r['latency_seconds']:.0f} s, a new subject entering each time"
        )
        print(f"   {'path':<40}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'sent/s':>9}{'lost':>6}")
        for label, prefix in (
            ("raw JetStream publish → consumer", "latency_raw"),
            ("ingest Track → SegmentEntered", "latency_segment"),
        ):
            print(
                f"   {label:<40}{r[f'{prefix}_p50_ms']:>9.1f}{r[f'{prefix}_p99_ms']:>9.1f}"
                f"{r[f'{prefix}_max_ms']:>9.1f}{r[f'{prefix}_achieved_rate_per_s']:>9.1f}"
                f"{r[f'{prefix}_lost']:>6}"
            )
        print(
            f"   {'  of which Track → on EVENTS (ingest)':<40}"
            f"{r['latency_segment_to_events_p50_ms']:>9.1f}"
            f"{r['latency_segment_to_events_p99_ms']:>9.1f}"
        )
        print(
            f"   ratio to raw: p50 {r['latency_p50_ratio_to_raw']:.1f}x, "
            f"p99 {r['latency_p99_ratio_to_raw']:.1f}x; "
            f"{r['latency_segment_not_accepted']} not accepted by ingest"
        )
    if "clock_p50_ms" in r:
        print(
            f"3. clock-driven exits, window {r['clock_window_seconds']:.0f} s, "
            f"TAILOR_CLOCK_SECONDS={r['clock_seconds']}: window expiry → SegmentExited"
        )
        print(
            f"   {r['clock_subjects']} subjects, {r['clock_entered']} entered, "
            f"{r['clock_exited_window_expired']} exited (WINDOW_EXPIRED), "
            f"{r['clock_other_exits']} other exits"
        )
        print(
            f"   lag p50 {r['clock_p50_ms']:.0f} ms, p99 {r['clock_p99_ms']:.0f} ms, "
            f"max {r['clock_max_ms']:.0f} ms, min {r['clock_min_ms']:.0f} ms "
            f"(clock interval {r['clock_seconds'] * 1000:.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("evaluation", "latency", "clock"))
    parser.add_argument("--events", type=int, default=4_000, help="evaluation: events per round")
    parser.add_argument("--subjects", type=int, default=2_000, help="evaluation: subjects")
    parser.add_argument("--batch", type=int, default=200, help="evaluation: events per batch")
    parser.add_argument("--rounds", type=int, default=3, help="evaluation: rounds")
    parser.add_argument("--rate", type=float, default=100.0, help="latency: events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency: how long to send")
    parser.add_argument(
        "--deadline", type=float, default=10.0, help="seconds after the last send for arrivals"
    )
    parser.add_argument("--clock-subjects", type=int, default=200, help="clock: subjects")
    parser.add_argument("--clock-rate", type=float, default=50.0, help="clock: entries per s")
    parser.add_argument(
        "--clock-seconds", type=float, default=0.25, help="TAILOR_CLOCK_SECONDS for segment"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
