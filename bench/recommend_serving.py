"""Recommend serving figures on the real-data sample, each next to a raw limit measured in the
same run:

1. latency — Recommend (k=10) under ``--callers`` concurrent callers (closed loop, a fixed
   number of requests per round) for a mix of subjects: named UCI customers with
   ``personalization`` consent and a history, and one in five named customers without
   consent (history stored, never read). p50/p90/p99/max ms and requests/s, the median of
   ``--rounds`` rounds; SimilarItems (k=10, items of the file) and Popular (k=10) the same
   way. The raw limit: grpc.health.v1 Check on the same recommend process, through the same
   channel, under the same callers — the floor of a Python gRPC round trip here.
2. lag — an order of two brand-new items by a consented customer, sent through ingest's
   Track, timed from just before the send until SimilarItems(first item) lists the second
   (polled every 5 ms, deadline 10 s), one order at a time; with the stages on the way (on
   EVENTS, stored in the interactions table). The raw limit: envelopes of the same size
   published straight to JetStream at the same pace, timed to delivery to an ephemeral
   consumer.

Setup (timed, not compared): the sample (or, with --full, the whole file) imported through
ingest with ``tailor import``'s code, consent granted, every interaction applied by the
real-time models (GetModelStatus realtime_lag zero and the interactions count stable), then
ALS trained with TrainModel until it serves; its GetModelStatus figures are printed.

Consent, ingest and recommend run as their own processes (service defaults, but the
training schedule off). Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers; talks
only to 127.0.0.1 and stops by itself. Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.api import DeliverPolicy

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.recommend.v1 import recommend_pb2 as pb
from tailor.recommend.v1 import recommend_pb2_grpc
from tailor_cli.importing.command import import_file
from tailor_cli.importing.uci import accepted_events
from tailor_core.bus import StreamSpec, delete_streams, provision_streams
from tailor_core.envelopes import customer_event_envelope, customer_event_id, parse
from tailor_core.streams import Stream
from tailor_core.testing.infra import test_infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_recommend.intake import touches

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "uci-online-retail" / "sample.csv.gz"
FULL = ROOT.parent / "shared" / "data" / "uci-online-retail" / "online_retail.csv.gz"
SOURCE = "bench-recommend"
PURPOSE = "personalization"
K = 10
GRANTS_IN_FLIGHT = 50
WITHOUT_CONSENT_EVERY = 5  # one named customer in five gets no consent
CALL_TIMEOUT_SECONDS = 10.0
APPLIED_DEADLINE_SECONDS = 600.0
STABLE_SECONDS = 2.0
TRAIN_DEADLINE_SECONDS = 600.0
POLL_SECONDS = 0.005
LAG_DEADLINE_SECONDS = 10.0

READER = bearer("recommend:read", kind="service")
ADMIN = bearer("recommend:admin", "recommend:read")
MODEL_NAMES = {value: name.removeprefix("MODEL_").lower() for name, value in pb.Model.items()}


STARTED = time.perf_counter()


def note(text: str) -> None:
    """Progress on stderr, so that a long setup shows where it is."""
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def spread(ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms, default=float("nan")),
    }


def median_of_rounds(rounds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


# --- the platform and its data ---------------------------------------------------------------


@dataclass
class World:
    """The running services, the stubs the parts call, and who is who in the data."""

    platform: RunningPlatform
    recommend: recommend_pb2_grpc.RecommendServiceStub
    health: health_pb2_grpc.HealthStub
    ingest: ingest_pb2_grpc.IngestServiceStub
    api_key: tuple[tuple[str, str], ...]
    consented: list[str] = field(default_factory=list)
    not_consented: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)  # model -> in order seen

    def saw(self, versions: Sequence[pb.ModelVersion]) -> None:
        for v in versions:
            seen = self.versions.setdefault(MODEL_NAMES[v.model], [])
            if v.version not in seen:
                seen.append(v.version)


def file_facts(path: Path) -> tuple[list[str], list[str], int]:
    """(named customers, items by how often they were bought, interactions the file makes)."""
    customers: dict[str, None] = {}
    bought: Counter[str] = Counter()
    interactions = 0
    for event in accepted_events(path):
        if event.user_id:
            customers[event.user_id] = None
        found = touches(event)
        interactions += len(found)
        bought.update(t.item_id for t in found)
    return list(customers), [item for item, _ in bought.most_common()], interactions


async def grant(channel: grpc.aio.Channel, subjects: Sequence[str]) -> None:
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    officer = bearer("consent:write")
    for first in range(0, len(subjects), GRANTS_IN_FLIGHT):
        await asyncio.gather(
            *(
                stub.GrantConsent(
                    consent_pb2.GrantConsentRequest(
                        subject_id=subject,
                        purposes=[PURPOSE],
                        metadata=consent_pb2.DecisionMetadata(
                            source=consent_pb2.CONSENT_SOURCE_API
                        ),
                    ),
                    metadata=officer,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                for subject in subjects[first : first + GRANTS_IN_FLIGHT]
            )
        )


async def interaction_count(world: World) -> int:
    schema = world.platform.service("recommend").schema
    return int(await world.platform.pg.fetchval(f'SELECT count(*) FROM "{schema}".interactions'))


async def all_applied(world: World, expected: int) -> dict[str, Any]:
    """Wait until the real-time models have applied every stored interaction and the count
    has stopped moving (and reached what the file makes, or stood still for 10 s)."""
    started = time.perf_counter()
    last, since = -1, time.perf_counter()
    while time.perf_counter() - started < APPLIED_DEADLINE_SECONDS:
        try:
            status = await world.recommend.GetModelStatus(
                pb.GetModelStatusRequest(), metadata=ADMIN, timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as error:
            # A large catch-up of the real-time models can hold the service's event loop
            # for longer than a call's deadline: note it and ask again.
            note(f"GetModelStatus during the catch-up: {error.code().name}")
            continue
        count = await interaction_count(world)
        now = time.perf_counter()
        if count != last:
            last, since = count, now
        caught_up = status.realtime_lag.ToTimedelta().total_seconds() == 0
        stable = now - since
        if caught_up and stable >= STABLE_SECONDS and (count >= expected or stable >= 10):
            return {"interactions": count, "applied_seconds": since - started}
        await asyncio.sleep(0.25)
    raise SystemExit(f"interactions not applied within {APPLIED_DEADLINE_SECONDS:.0f} s")


async def als_info(world: World) -> pb.ModelInfo:
    status = await world.recommend.GetModelStatus(
        pb.GetModelStatusRequest(), metadata=ADMIN, timeout=CALL_TIMEOUT_SECONDS
    )
    found: pb.ModelInfo = next(m for m in status.models if m.model == pb.MODEL_ALS)
    return found


async def train_als(world: World) -> dict[str, Any]:
    """TrainModel, then wait for the ALS version to serve and to reach the live models."""
    started = time.perf_counter()
    await world.recommend.TrainModel(
        pb.TrainModelRequest(models=[pb.MODEL_ALS]), metadata=ADMIN, timeout=CALL_TIMEOUT_SECONDS
    )
    while True:
        info = await als_info(world)
        if info.state == pb.MODEL_STATE_FAILED:
            raise SystemExit(f"ALS training failed: {info.error}")
        if info.state == pb.MODEL_STATE_SERVING and info.version:
            break
        if time.perf_counter() - started > TRAIN_DEADLINE_SECONDS:
            raise SystemExit(f"ALS not serving within {TRAIN_DEADLINE_SECONDS:.0f} s")
        await asyncio.sleep(0.1)
    serving_seconds = time.perf_counter() - started
    # The live models load a new version on their next refresh: wait until answers use it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while True:
                reply = await world.recommend.Recommend(
                    pb.RecommendRequest(subject_id=world.consented[0], k=K),
                    metadata=READER,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                if any(v.version == info.version for v in reply.model_versions):
                    break
                await asyncio.sleep(0.05)
    return {
        "version": info.version,
        "wall_seconds": serving_seconds,
        "training_seconds": info.training_seconds,
        "peak_bytes": info.training_peak_bytes,
        "users": info.users,
        "items": info.items,
        "interactions": info.interactions,
        "metrics": dict(info.metrics),
    }


async def set_up(world: World, path: Path) -> dict[str, Any]:
    customers, items, expected = file_facts(path)
    address = world.platform.service("ingest").address
    note(f"importing {path.name} through ingest")
    summary, _ = await import_file(path, ingest_addr=address, admin=bearer("ingest:admin"))
    world.consented = [c for n, c in enumerate(customers) if n % WITHOUT_CONSENT_EVERY]
    world.not_consented = [c for n, c in enumerate(customers) if not n % WITHOUT_CONSENT_EVERY]
    world.items = items
    granting = time.perf_counter()
    note(f"{summary.events:,} events imported; granting consent")
    await grant(world.platform.channel("consent"), world.consented)
    note("waiting for every interaction to be applied")
    grant_seconds = time.perf_counter() - granting
    applied = await all_applied(world, expected)
    return {
        "file": path.name,
        "events_sent": summary.events,
        "events_accepted": summary.outcomes["accepted"].events,
        "import_seconds": summary.seconds,
        "import_events_per_s": summary.events_per_second,
        "grant_seconds": grant_seconds,
        "customers": len(customers),
        "consented": len(world.consented),
        "not_consented": len(world.not_consented),
        "items": len(items),
        "interactions_expected": expected,
        **applied,
    }


# --- 1. latency under concurrent callers -----------------------------------------------------


@dataclass
class Loop:
    latencies_ms: list[float]
    seconds: float
    errors: Counter[str]

    def figures(self) -> dict[str, float]:
        failed = sum(self.errors.values())
        return spread(self.latencies_ms) | {
            "calls": len(self.latencies_ms) + failed,
            "per_s": (len(self.latencies_ms) + failed) / self.seconds if self.seconds else 0.0,
            "errors": failed,
        }


async def closed_loop(
    callers: int,
    requests: int,
    call: Callable[[int], Awaitable[None]],
    seconds: float = float("inf"),
) -> Loop:
    """``requests`` calls of ``call(n)`` by ``callers`` callers, each starting its next call
    when its last one ends; none is started after ``seconds``."""
    next_n = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def caller() -> None:
        nonlocal next_n
        while next_n < requests and time.perf_counter() < stop_at:
            n = next_n
            next_n += 1
            started = time.perf_counter()
            try:
                await call(n)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller() for _ in range(callers)))
    return Loop(latencies, time.perf_counter() - started, errors)


async def latency_part(world: World, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    subjects = world.consented + world.not_consented
    rng.shuffle(subjects)
    items = list(world.items)
    rng.shuffle(items)
    answers: Counter[str] = Counter()

    async def health(n: int) -> None:
        await world.health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS)

    async def recommend(n: int) -> None:
        reply = await world.recommend.Recommend(
            pb.RecommendRequest(subject_id=subjects[n % len(subjects)], k=K),
            metadata=READER,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        world.saw(reply.model_versions)
        reason = pb.NonPersonalizedReason.Name(reply.non_personalized_reason)
        answers["personalized" if reply.personalized else reason] += 1

    async def similar(n: int) -> None:
        reply = await world.recommend.SimilarItems(
            pb.SimilarItemsRequest(item_id=items[n % len(items)], k=K),
            metadata=READER,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        world.saw(reply.model_versions)

    async def popular(n: int) -> None:
        reply = await world.recommend.Popular(
            pb.PopularRequest(k=K), metadata=READER, timeout=CALL_TIMEOUT_SECONDS
        )
        world.saw(reply.model_versions)

    calls = {"health": health, "recommend": recommend, "similar": similar, "popular": popular}
    # Warm-up, not counted: every subject once (the consent answers cached), the others a bit.
    await closed_loop(args.callers, len(subjects), recommend)
    for name in ("health", "similar", "popular"):
        await closed_loop(args.callers, args.callers * 4, calls[name])
    answers.clear()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    failures: Counter[str] = Counter()
    for _ in range(args.rounds):
        for name, call in calls.items():
            loop = await closed_loop(args.callers, args.requests, call, args.round_seconds)
            rounds[name].append(loop.figures())
            failures.update(f"{name} {code}" for code in loop.errors.elements())
    found: dict[str, Any] = {name: median_of_rounds(r) for name, r in rounds.items()}
    found["recommend_answers"] = dict(answers)
    found["error_codes"] = dict(failures)
    return found


# --- 2. real-time update lag -----------------------------------------------------------------


def order(subject: str, items: Sequence[str], message_id: str) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        message_id=message_id,
        user_id=subject,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=f"order-{message_id}",
                products=[
                    events_pb2.Product(
                        product_id=item,
                        name="WHITE HANGING HEART T-LIGHT HOLDER",
                        price=common_pb2.Money(amount="2.55", currency="GBP"),
                        quantity=1,
                    )
                    for item in items
                ],
                revenue=common_pb2.Money(amount=f"{2.55 * len(items):.2f}", currency="GBP"),
            ),
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    event.context.location.country = "GB"
    event.context.channel = "web"
    return event


async def until(check: Callable[[], Awaitable[bool]], deadline: float) -> float | None:
    """Seconds on the perf counter when ``check()`` first held, polled every 5 ms; None when
    it did not by ``deadline`` (a perf counter value)."""
    while time.perf_counter() < deadline:
        if await check():
            return time.perf_counter()
        await asyncio.sleep(POLL_SECONDS)
    return None


def lag_figures(ms: Sequence[float], samples: int) -> dict[str, float]:
    return spread(ms) | {"samples": samples, "lost": samples - len(ms)}


async def lag_part(world: World, args: argparse.Namespace) -> dict[str, Any]:
    """One order at a time, ``args.lag_gap`` seconds after the previous one was seen."""
    platform = world.platform
    schema = platform.service("recommend").schema
    run = uuid.uuid4().hex[:6]
    on_events: dict[str, float] = {}

    async def on_event(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("customer_event"):
            on_events.setdefault(envelope.customer_event.message_id, at)

    watcher = await platform.nc.jetstream().subscribe(
        platform.naming.all_subjects(Stream.EVENTS),
        cb=on_event,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    # New subjects, consented before the clock starts: the only other items their orders pair
    # with are their own, so "B is listed for A" cannot lose to ties with a long history.
    subjects = [f"lag-{run}-{n}" for n in range(args.lag_samples)]
    await grant(platform.channel("consent"), subjects)
    seen_ms: list[float] = []
    events_ms: list[float] = []
    stored_ms: list[float] = []
    refused = 0
    try:
        for n in range(args.lag_samples):
            first, second = f"NEW-{run}-{n}-A", f"NEW-{run}-{n}-B"
            message_id = f"{run}-lag-{n}"
            event = order(subjects[n], [first, second], message_id)
            event_id = customer_event_id(SOURCE, message_id)

            async def stored(event_id: str = event_id) -> bool:
                row = await platform.pg.fetchval(
                    f'SELECT 1 FROM "{schema}".interactions WHERE event_id = $1 LIMIT 1',
                    event_id,
                )
                return row is not None

            async def listed(first: str = first, second: str = second) -> bool:
                reply = await world.recommend.SimilarItems(
                    pb.SimilarItemsRequest(item_id=first, k=K),
                    metadata=READER,
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                if any(i.item_id == second for i in reply.items):
                    world.saw(reply.model_versions)
                    return True
                return False

            sent = time.perf_counter()
            reply = await world.ingest.Track(
                ingest_pb2.TrackRequest(event=event),
                metadata=world.api_key,
                timeout=CALL_TIMEOUT_SECONDS,
            )
            if reply.result.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED:
                refused += 1
                continue
            deadline = sent + LAG_DEADLINE_SECONDS
            stored_at, seen_at = await asyncio.gather(
                until(stored, deadline), until(listed, deadline)
            )
            if seen_at is not None:
                seen_ms.append((seen_at - sent) * 1000)
            if stored_at is not None:
                stored_ms.append((stored_at - sent) * 1000)
            if message_id in on_events:
                events_ms.append((on_events[message_id] - sent) * 1000)
            await asyncio.sleep(args.lag_gap)
    finally:
        await watcher.unsubscribe()
    samples = args.lag_samples - refused
    return {
        "similar": lag_figures(seen_ms, samples) | {"not_accepted": refused},
        "on_events": lag_figures(events_ms, samples),
        "stored": lag_figures(stored_ms, samples),
    }


async def raw_lag_part(world: World, args: argparse.Namespace) -> dict[str, Any]:
    """The raw limit: an envelope of the same order published straight to JetStream, timed
    to its delivery to an ephemeral ordered consumer, one at a time with the same gap."""
    platform = world.platform
    js = platform.nc.jetstream()
    stream = f"{platform.naming.namespace.upper()}_RAWRECOMMEND"
    prefix = f"{platform.naming.namespace}.rawrecommend"
    await provision_streams(js, [StreamSpec(name=stream, subjects=(f"{prefix}.>",))])
    delivered: dict[str, asyncio.Future[float]] = {}

    async def on_delivery(message: Any) -> None:
        waiting = delivered.get(message.headers["Nats-Msg-Id"])
        if waiting is not None and not waiting.done():
            waiting.set_result(time.perf_counter())

    watcher = await js.subscribe(f"{prefix}.>", cb=on_delivery, ordered_consumer=True)
    run = uuid.uuid4().hex[:6]
    ms: list[float] = []
    try:
        for n in range(args.lag_samples):
            event = order(f"lag-{run}-{n}", [f"RAW-{n}-A", f"RAW-{n}-B"], f"{run}-raw-{n}")
            event.source_id = SOURCE
            envelope = customer_event_envelope(event, received_at=datetime.now(UTC))
            arrival = delivered[envelope.id] = asyncio.get_running_loop().create_future()
            sent = time.perf_counter()
            await js.publish(
                f"{prefix}.{n % platform.naming.partitions}",
                envelope.SerializeToString(),
                headers={"Nats-Msg-Id": envelope.id},
            )
            with contextlib.suppress(TimeoutError):
                ms.append((await asyncio.wait_for(arrival, LAG_DEADLINE_SECONDS) - sent) * 1000)
            await asyncio.sleep(args.lag_gap)
    finally:
        await watcher.unsubscribe()
        await delete_streams(js, [stream])
    return lag_figures(ms, args.lag_samples)


# --- the run ---------------------------------------------------------------------------------


#: Mappings kept as they are in the output, not flattened.
KEPT_WHOLE = ("metrics", "recommend_answers", "error_codes", "versions_served")


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key not in KEPT_WHOLE:
            found |= flatten(f"{prefix}_{key}", value)
        else:
            found[f"{prefix}_{key}"] = value
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    path = FULL if args.full else SAMPLE
    env = {"recommend": {"TAILOR_TRAIN_INTERVAL_SECONDS": "0"}}
    if args.follow_seconds is not None:
        env["recommend"]["TAILOR_FOLLOW_SECONDS"] = str(args.follow_seconds)
    names = ("consent", "ingest", "recommend")
    for name in names:
        env.setdefault(name, {})["TAILOR_LOG_LEVEL"] = "warning"
    result: dict[str, Any] = {
        "callers": args.callers,
        "requests": args.requests,
        "k": K,
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        result["infra"] = infra.source
        note("starting consent, ingest and recommend")
        async with running_platform(infra, Path(scratch), names, env=env, prefix="brs") as running:
            created = await admin_pb2_grpc.IngestAdminServiceStub(
                running.channel("ingest")
            ).CreateApiKey(
                admin_pb2.CreateApiKeyRequest(source_id=SOURCE), metadata=bearer("ingest:admin")
            )
            channel = running.channel("recommend")
            world = World(
                running,
                recommend_pb2_grpc.RecommendServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
                ingest_pb2_grpc.IngestServiceStub(running.channel("ingest")),
                (("x-api-key", created.secret),),
            )
            result |= flatten("setup", await set_up(world, path))
            note("training ALS")
            result |= flatten("als", await train_als(world))
            if args.only in (None, "latency"):
                note("latency part")
                latency = await latency_part(world, args)
                result["rounds"] = args.rounds
                result["round_seconds"] = args.round_seconds
                result |= flatten("latency", latency)
                for name in ("recommend", "similar", "popular"):
                    for q in ("p50", "p99"):
                        result[f"latency_{name}_{q}_ratio_to_health"] = (
                            latency[name][f"{q}_ms"] / latency["health"][f"{q}_ms"]
                        )
                    result[f"latency_{name}_per_s_ratio_to_health"] = (
                        latency[name]["per_s"] / latency["health"]["per_s"]
                    )
            if args.only in (None, "lag"):
                # After the latency part: a fresh order moves "now" of the popularity windows.
                note("lag part")
                raw = await raw_lag_part(world, args)
                lag = await lag_part(world, args)
                result["lag_gap_seconds"] = args.lag_gap
                result |= flatten("lag_raw", raw)
                result |= flatten("lag", lag)
                result["lag_p50_ratio_to_raw"] = lag["similar"]["p50_ms"] / raw["p50_ms"]
                result["lag_p99_ratio_to_raw"] = lag["similar"]["p99_ms"] / raw["p99_ms"]
            result["follow_seconds"] = args.follow_seconds
            result["versions_served"] = world.versions
    note("stopped")
    return result


def print_table(r: Mapping[str, Any]) -> None:
    follow = r["follow_seconds"] if r["follow_seconds"] is not None else "service default"
    print(
        f"recommend serving on {r['setup_file']} ({r['infra']} Postgres and NATS; "
        f"TAILOR_FOLLOW_SECONDS: {follow}; 1-min load average at start "
        f"{r['load_average_at_start']:.1f} on {os.cpu_count()} cores)"
    )
    print(
        f"   setup: {r['setup_events_accepted']:,} of {r['setup_events_sent']:,} events accepted "
        f"by ingest in {r['setup_import_seconds']:.1f} s ({r['setup_import_events_per_s']:,.0f}"
        f"/s); {r['setup_interactions']:,} interactions (file: "
        f"{r['setup_interactions_expected']:,}) applied {r['setup_applied_seconds']:.1f} s "
        f"after the import; {r['setup_items']:,} items"
    )
    print(
        f"   subjects: {r['setup_consented']:,} customers with consent, "
        f"{r['setup_not_consented']:,} without (granted in {r['setup_grant_seconds']:.1f} s)"
    )
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["als_metrics"].items())) or "none"
    print(
        f"   ALS {r['als_version']}: TrainModel → SERVING in {r['als_wall_seconds']:.1f} s, "
        f"training {r['als_training_seconds']:.2f} s, peak RSS "
        f"{r['als_peak_bytes'] / 2**20:,.0f} MiB, {r['als_users']:,} users x "
        f"{r['als_items']:,} items, {r['als_interactions']:,} interactions"
    )
    print(f"   ALS holdout metrics: {metrics}")
    if "latency_recommend_p50_ms" in r:
        print(
            f"1. RPC latency, {r['callers']} concurrent callers, k={r['k']}, median of "
            f"{r['rounds']} rounds of {r['requests']:,} calls per RPC or "
            f"{r['round_seconds']:.0f} s, whichever ends first"
        )
        print(
            f"   {'RPC':<26}{'calls':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            f"{'req/s':>8}"
            f"{'errors':>7}{'x p50':>7}{'x p99':>7}"
        )
        for label, name in (
            ("health Check (raw limit)", "health"),
            ("Recommend", "recommend"),
            ("SimilarItems", "similar"),
            ("Popular", "popular"),
        ):
            p = f"latency_{name}"
            ratios = (
                (1.0, 1.0)
                if name == "health"
                else (r[f"{p}_p50_ratio_to_health"], r[f"{p}_p99_ratio_to_health"])
            )
            print(
                f"   {label:<26}{r[f'{p}_calls']:>8.0f}{r[f'{p}_p50_ms']:>8.1f}"
                f"{r[f'{p}_p90_ms']:>8.1f}{r[f'{p}_p99_ms']:>8.1f}{r[f'{p}_max_ms']:>8.1f}{r[f'{p}_per_s']:>8.0f}"
                f"{r[f'{p}_errors']:>7.0f}{ratios[0]:>7.1f}{ratios[1]:>7.1f}"
            )
        answers = ", ".join(f"{k} {v:,}" for k, v in sorted(r["latency_recommend_answers"].items()))
        print(f"   Recommend answers over all rounds: {answers}")
        if r["latency_error_codes"]:
            codes = ", ".join(f"{k} {v}" for k, v in sorted(r["latency_error_codes"].items()))
            print(f"   failed calls over all rounds: {codes}")
        print(
            f"   Recommend throughput {r['latency_recommend_per_s_ratio_to_health']:.3f}x "
            "health's; x = ratio to health Check"
        )
    if "lag_similar_p50_ms" in r:
        print(
            f"2. real-time update lag, {r['lag_similar_samples']} orders of two new items, one "
            f"at a time, {r['lag_gap_seconds'] * 1000:.0f} ms apart"
        )
        print(f"   {'path':<44}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'lost':>6}")
        for label, p in (
            ("raw JetStream publish → consumer", "lag_raw"),
            ("ingest Track → listed in SimilarItems", "lag_similar"),
            ("  of which Track → on EVENTS (ingest)", "lag_on_events"),
            ("  of which Track → row in interactions", "lag_stored"),
        ):
            print(
                f"   {label:<44}{r[f'{p}_p50_ms']:>8.1f}{r[f'{p}_p90_ms']:>8.1f}"
                f"{r[f'{p}_p99_ms']:>8.1f}{r[f'{p}_max_ms']:>8.1f}{r[f'{p}_lost']:>6}"
            )
        print(
            f"   ratio to raw: p50 {r['lag_p50_ratio_to_raw']:.1f}x, "
            f"p99 {r['lag_p99_ratio_to_raw']:.1f}x; lost = not listed within "
            f"{LAG_DEADLINE_SECONDS:.0f} s; {r['lag_similar_not_accepted']} not accepted by ingest"
        )
    served = []
    for model, versions in sorted(r["versions_served"].items()):
        if len(versions) == 1:
            served.append(f"{model} {versions[0]}")
        else:
            served.append(f"{model} {len(versions)} versions, {versions[0]} … {versions[-1]}")
    print("   model versions served: " + "; ".join(served))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("latency", "lag"))
    parser.add_argument("--callers", type=int, default=50, help="latency: concurrent callers")
    parser.add_argument(
        "--requests", type=int, default=1_000, help="latency: calls of each RPC per round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="latency: rounds (median)")
    parser.add_argument(
        "--round-seconds",
        type=float,
        default=10.0,
        help="latency: no call of an RPC's round starts after this many seconds",
    )
    parser.add_argument("--lag-samples", type=int, default=30, help="lag: orders sent")
    parser.add_argument(
        "--lag-gap", type=float, default=0.1, help="lag: seconds between one order and the next"
    )
    parser.add_argument(
        "--follow-seconds",
        type=float,
        default=None,
        help="TAILOR_FOLLOW_SECONDS for recommend (default: the service's)",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"the whole file ({FULL}) instead of the sample"
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
