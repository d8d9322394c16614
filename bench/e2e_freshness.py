"""End-to-end freshness: how long after an order is sent through ingest the rest of the
platform reflects it — ingest → profile → segment → recommendation.

All five services run as their own processes. Each subject (consent granted for analytics,
marketing and personalization) first sends a Product Viewed (warm-up, not timed: its
profile exists and the services have its consent answers cached); the segment
``event "Order Completed" where product.product_id starts with "<run prefix>"`` is active.
Then orders are sent through ingest's Track at a fixed rate (open loop), one per subject,
each of two items no one has bought before (A and B), and each order is timed from just
before its send until

* on EVENTS — its envelope is on the EVENTS stream (ingest's part, for reading the rest);
* profile — the ProfileChanged whose cause_event_id is the order arrives on PROFILE;
* segment — the subject's SegmentEntered for the segment arrives on SEGMENT;
* recommendation — SimilarItems(A) lists B (polled every ``--poll`` seconds);
* chain — the last of profile, segment and recommendation.

The raw limit, measured in the same run: envelopes of the same size published straight to
JetStream at the same rate, timed from just before the publish to delivery to an ephemeral
consumer on the same NATS. The polling is load on the recommend service that a real caller
would not add; keep ``--rate`` modest on a small machine.

Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers; talks only to 127.0.0.1 and
stops by itself. Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js.api import DeliverPolicy

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_core.bus import StreamSpec, delete_streams, provision_streams
from tailor_core.envelopes import customer_event_envelope, customer_event_id, parse
from tailor_core.settings import SERVICE_NAMES
from tailor_core.streams import Stream
from tailor_core.testing.infra import test_infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform

SOURCE = "bench-freshness"
PURPOSES = ("analytics", "marketing", "personalization")
SEGMENT_ID = "fresh-item-buyers"
GRANTS_IN_FLIGHT = 50
BATCH_RPC = 500
CALL_TIMEOUT_SECONDS = 10.0
WARM_UP_DEADLINE_SECONDS = 120.0
READER = bearer("recommend:read", kind="service")
#: the stages an order goes through; "chain" is the last of the three after ingest
CHAIN = ("profile", "segment", "similar")
STAGES = ("events", *CHAIN)
STARTED = time.perf_counter()


def note(text: str) -> None:
    """Progress on stderr, so that a slow setup shows where it is."""
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def spread(ms: Sequence[float], sent: int) -> dict[str, float]:
    """p50/p90/p99/max of ``ms``; lost = sent orders that never got there."""
    return {
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms, default=float("nan")),
        "sent": sent,
        "lost": sent - len(ms),
    }


@dataclass
class Timeline:
    """Per order number: when it was sent and when each stage saw it (perf_counter s)."""

    sent_at: dict[int, float] = field(default_factory=dict)
    seen_at: dict[str, dict[int, float]] = field(default_factory=lambda: {s: {} for s in STAGES})
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def saw(self, stage: str, n: int | None, at: float) -> None:
        if n is not None and n in self.sent_at:
            self.seen_at[stage].setdefault(n, at)
            if self.complete:
                self.all_seen.set()

    @property
    def complete(self) -> bool:
        return all(len(self.seen_at[s]) == len(self.sent_at) for s in CHAIN)

    def stage_ms(self, stage: str) -> list[float]:
        seen = self.seen_at[stage]
        return [(seen[n] - sent) * 1000 for n, sent in self.sent_at.items() if n in seen]

    def chain_ms(self) -> list[float]:
        """Per order that went through every stage: send → the last stage to see it."""
        return [
            (max(self.seen_at[s][n] for s in CHAIN) - sent) * 1000
            for n, sent in self.sent_at.items()
            if all(n in self.seen_at[s] for s in CHAIN)
        ]


async def at_fixed_rate(
    rate: float, count: int, send: Callable[[int], Coroutine[Any, Any, None]]
) -> tuple[float, list[asyncio.Task[None]]]:
    """Start ``send(n)`` for n < ``count`` on a fixed schedule whatever earlier sends are
    doing (open loop); returns the achieved starts per second and the running sends."""
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for n in range(count):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    elapsed = time.perf_counter() - started
    return (len(tasks) / elapsed if elapsed > 0 else 0.0), tasks


def product(product_id: str) -> events_pb2.Product:
    return events_pb2.Product(
        product_id=product_id,
        name="WHITE HANGING HEART T-LIGHT HOLDER",
        category="Home/Candles",
        price=common_pb2.Money(amount="2.55", currency="GBP"),
        quantity=1,
    )


def viewed(message_id: str, subject: str) -> events_pb2.CustomerEvent:
    event = events_pb2.CustomerEvent(
        message_id=message_id,
        user_id=subject,
        track=events_pb2.Track(
            event="Product Viewed", product=events_pb2.ProductEvent(product=product("85123A"))
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    event.context.channel = "web"
    return event


def order(message_id: str, subject: str, items: Sequence[str]) -> events_pb2.CustomerEvent:
    """An Order Completed of one of each of ``items``."""
    event = events_pb2.CustomerEvent(
        message_id=message_id,
        user_id=subject,
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=f"order-{message_id}",
                products=[product(item) for item in items],
                revenue=common_pb2.Money(amount=f"{2.55 * len(items):.2f}", currency="GBP"),
            ),
        ),
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    event.context.locale = "en-GB"
    event.context.channel = "web"
    return event


# --- setting up --------------------------------------------------------------------------------


async def grant(platform: RunningPlatform, subjects: Sequence[str]) -> None:
    stub = consent_pb2_grpc.ConsentServiceStub(platform.channel("consent"))
    officer = bearer("consent:write")
    for first in range(0, len(subjects), GRANTS_IN_FLIGHT):
        await asyncio.gather(
            *(
                stub.GrantConsent(
                    consent_pb2.GrantConsentRequest(
                        subject_id=subject,
                        purposes=list(PURPOSES),
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


async def create_segment(platform: RunningPlatform, rule: str) -> None:
    """Create the segment and wait until it is ACTIVE (its backfill done)."""
    stub = segment_pb2_grpc.SegmentServiceStub(platform.channel("segment"))
    writer = bearer("segment:write", "segment:read")
    await stub.CreateSegment(
        segment_pb2.CreateSegmentRequest(
            segment_id=SEGMENT_ID, name=SEGMENT_ID, rule=segment_pb2.RuleInput(text=rule)
        ),
        metadata=writer,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = await stub.GetSegment(
            segment_pb2.GetSegmentRequest(segment_id=SEGMENT_ID), metadata=writer
        )
        if reply.segment.state == segment_pb2.SEGMENT_STATE_ACTIVE:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"segment {SEGMENT_ID} not ACTIVE within 30 s")


async def caught_up(platform: RunningPlatform, deadline_seconds: float) -> None:
    """Wait until no durable consumer of EVENTS, PROFILE or SEGMENT has anything pending on
    two looks in a row."""
    js = platform.nc.jetstream()
    deadline = time.monotonic() + deadline_seconds
    quiet = 0
    while time.monotonic() < deadline:
        busy = 0
        for stream in (Stream.EVENTS, Stream.PROFILE, Stream.SEGMENT):
            for info in await js.consumers_info(platform.naming.stream_name(stream)):
                busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
        quiet = quiet + 1 if busy == 0 else 0
        if quiet == 2:
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the services did not process the warm-up events in time")


async def warm_up(
    platform: RunningPlatform, ingest: Any, key: Any, subjects: Sequence[str]
) -> float:
    """A Product Viewed per subject through Batch; returns seconds until all processed."""
    started = time.perf_counter()
    events = [viewed(f"warm-{n}", s) for n, s in enumerate(subjects)]
    for first in range(0, len(events), BATCH_RPC):
        reply = await ingest.Batch(
            ingest_pb2.BatchRequest(events=events[first : first + BATCH_RPC]),
            metadata=key,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        refused = [r for r in reply.results if r.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED]
        if refused:
            raise SystemExit(f"ingest did not accept a warm-up event: {refused[0]}")
    await caught_up(platform, WARM_UP_DEADLINE_SECONDS)
    return time.perf_counter() - started


# --- the two paths -----------------------------------------------------------------------------


async def chain_path(
    platform: RunningPlatform,
    ingest: Any,
    key: Any,
    subjects: Sequence[str],
    run: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One order per subject at ``args.rate``, each timed through every stage."""
    js = platform.nc.jetstream()
    recommend = recommend_pb2_grpc.RecommendServiceStub(platform.channel("recommend"))
    timeline = Timeline()
    by_event_id: dict[str, int] = {}
    by_message_id: dict[str, int] = {}
    by_subject: dict[str, int] = {}

    async def on_event(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("customer_event"):
            timeline.saw("events", by_message_id.get(envelope.customer_event.message_id), at)

    async def on_profile(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("profile_changed"):
            timeline.saw("profile", by_event_id.get(envelope.profile_changed.cause_event_id), at)

    async def on_segment(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("segment_entered"):
            timeline.saw("segment", by_subject.get(envelope.segment_entered.subject_id), at)

    watchers = [
        await js.subscribe(
            platform.naming.all_subjects(stream),
            cb=callback,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        for stream, callback in (
            (Stream.EVENTS, on_event),
            (Stream.PROFILE, on_profile),
            (Stream.SEGMENT, on_segment),
        )
    ]
    not_accepted = 0

    async def send(n: int) -> None:
        nonlocal not_accepted
        subject = subjects[n]
        first, second = f"F{run}-{n}-A", f"F{run}-{n}-B"
        message_id = f"{run}-order-{n}"
        event = order(message_id, subject, [first, second])
        by_event_id[customer_event_id(SOURCE, message_id)] = n
        by_message_id[message_id] = n
        by_subject[subject] = n
        sent = timeline.sent_at[n] = time.perf_counter()
        reply = await ingest.Track(
            ingest_pb2.TrackRequest(event=event), metadata=key, timeout=CALL_TIMEOUT_SECONDS
        )
        if reply.result.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED:
            not_accepted += 1
            return
        deadline = sent + args.deadline
        while time.perf_counter() < deadline:
            answer = await recommend.SimilarItems(
                recommend_pb2.SimilarItemsRequest(item_id=first, k=10),
                metadata=READER,
                timeout=CALL_TIMEOUT_SECONDS,
            )
            if any(item.item_id == second for item in answer.items):
                timeline.saw("similar", n, time.perf_counter())
                return
            await asyncio.sleep(args.poll)

    try:
        achieved, sends = await at_fixed_rate(args.rate, len(subjects), send)
        await asyncio.gather(*sends)  # each poll stops by its own deadline
        if not timeline.complete:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(timeline.all_seen.wait(), args.deadline)
    finally:
        for watcher in watchers:
            await watcher.unsubscribe()
    sent = len(timeline.sent_at)
    found: dict[str, Any] = {
        "achieved_rate_per_s": achieved,
        "not_accepted": not_accepted,
    }
    for stage in STAGES:
        found[stage] = spread(timeline.stage_ms(stage), sent)
    found["chain"] = spread(timeline.chain_ms(), sent)
    return found


async def raw_path(platform: RunningPlatform, count: int, args: argparse.Namespace) -> Any:
    """The raw limit: envelopes of the same order published straight to JetStream at the
    same rate, each timed to its delivery to an ephemeral ordered consumer."""
    js = platform.nc.jetstream()
    stream = f"{platform.naming.namespace.upper()}_RAWFRESHNESS"
    prefix = f"{platform.naming.namespace}.rawfreshness"
    await provision_streams(js, [StreamSpec(name=stream, subjects=(f"{prefix}.>",))])
    sent_at: dict[str, float] = {}
    latencies_ms: list[float] = []
    arrived = asyncio.Event()

    async def on_delivery(message: Any) -> None:
        at = time.perf_counter()
        sent = sent_at.get(message.headers["Nats-Msg-Id"])
        if sent is not None:
            latencies_ms.append((at - sent) * 1000)
            if len(latencies_ms) == count:
                arrived.set()

    watcher = await js.subscribe(f"{prefix}.>", cb=on_delivery, ordered_consumer=True)
    received = datetime.now(UTC)

    async def publish(n: int) -> None:
        event = order(f"raw-{n}", f"raw-{n}", [f"RAW-{n}-A", f"RAW-{n}-B"])
        event.source_id = SOURCE
        envelope = customer_event_envelope(event, received_at=received)
        sent_at[envelope.id] = time.perf_counter()
        await js.publish(
            f"{prefix}.{n % platform.naming.partitions}",
            envelope.SerializeToString(),
            headers={"Nats-Msg-Id": envelope.id},
        )

    try:
        achieved, publishes = await at_fixed_rate(args.rate, count, publish)
        await asyncio.gather(*publishes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), args.deadline)
    finally:
        await watcher.unsubscribe()
        await delete_streams(js, [stream])
    return spread(latencies_ms, count) | {"achieved_rate_per_s": achieved}


# --- the run -----------------------------------------------------------------------------------


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            found |= flatten(f"{prefix}_{key}", value)
        else:
            found[f"{prefix}_{key}"] = value
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    env: dict[str, dict[str, str]] = {
        name: {"TAILOR_LOG_LEVEL": "warning"} for name in SERVICE_NAMES
    }
    env["recommend"]["TAILOR_TRAIN_INTERVAL_SECONDS"] = "0"  # no ALS fit competing for CPU
    if args.follow_seconds is not None:
        env["recommend"]["TAILOR_FOLLOW_SECONDS"] = str(args.follow_seconds)
    run_id = uuid.uuid4().hex[:6]
    subjects = [f"fresh-{run_id}-{n}" for n in range(count)]
    rule = f'event "Order Completed" where product.product_id starts with "F{run_id}-"'
    result: dict[str, Any] = {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "orders": count,
        "poll_seconds": args.poll,
        "deadline_seconds": args.deadline,
        "follow_seconds": args.follow_seconds,
        "segment_rule": rule,
    }
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        result["infra"] = infra.source
        note("starting the five services")
        async with running_platform(
            infra, Path(scratch), SERVICE_NAMES, env=env, prefix="bfr"
        ) as platform:
            channel = platform.channel("ingest")
            created = await admin_pb2_grpc.IngestAdminServiceStub(channel).CreateApiKey(
                admin_pb2.CreateApiKeyRequest(source_id=SOURCE), metadata=bearer("ingest:admin")
            )
            key = (("x-api-key", created.secret),)
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            note(f"granting consent to {count} subjects, creating the segment")
            await grant(platform, subjects)
            await create_segment(platform, rule)
            note("warm-up: a Product Viewed per subject")
            result["warm_up_seconds"] = await warm_up(platform, ingest, key, subjects)
            note("raw limit")
            result |= flatten("raw", await raw_path(platform, count, args))
            note("orders through the platform")
            chain = await chain_path(platform, ingest, key, subjects, run_id, args)
            note("stopping")
    result["achieved_rate_per_s"] = chain.pop("achieved_rate_per_s")
    result["not_accepted"] = chain.pop("not_accepted")
    stages = chain
    result |= flatten("to", {"events": stages.pop("events")})
    for stage, figures in stages.items():
        result |= flatten(stage, figures)
    result["e2e_freshness_p50_ms"] = result["chain_p50_ms"]
    result["e2e_freshness_p99_ms"] = result["chain_p99_ms"]
    result["chain_p50_ratio_to_raw"] = result["chain_p50_ms"] / result["raw_p50_ms"]
    result["chain_p99_ratio_to_raw"] = result["chain_p99_ms"] / result["raw_p99_ms"]
    return result


def print_table(r: Mapping[str, Any]) -> None:
    follow = r["follow_seconds"] if r["follow_seconds"] is not None else "service default"
    print(
        f"end-to-end freshness, {r['orders']} orders of two new items at {r['rate_per_s']:.0f}/s "
        f"(sent {r['achieved_rate_per_s']:.1f}/s), SimilarItems polled every "
        f"{r['poll_seconds'] * 1000:.0f} ms, TAILOR_FOLLOW_SECONDS: {follow}, "
        f"infra: {r['infra']}"
    )
    print(f"   {'path':<46}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'lost':>6}")
    for label, prefix in (
        ("raw JetStream publish → consumer (limit)", "raw"),
        ("Track → on EVENTS (ingest)", "to_events"),
        ("Track → ProfileChanged (profile)", "profile"),
        ("Track → SegmentEntered (segment)", "segment"),
        ("Track → listed in SimilarItems (recommend)", "similar"),
        ("Track → all three (the chain)", "chain"),
    ):
        print(
            f"   {label:<46}{r[f'{prefix}_p50_ms']:>9.1f}{r[f'{prefix}_p90_ms']:>9.1f}"
            f"{r[f'{prefix}_p99_ms']:>9.1f}{r[f'{prefix}_max_ms']:>9.1f}{r[f'{prefix}_lost']:>6}"
        )
    print(
        f"   chain ratio to raw: p50 {r['chain_p50_ratio_to_raw']:.1f}x, "
        f"p99 {r['chain_p99_ratio_to_raw']:.1f}x; lost = not seen within "
        f"{r['deadline_seconds']:.0f} s of the send; {r['not_accepted']} not accepted by ingest"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send")
    parser.add_argument(
        "--poll", type=float, default=0.01, help="seconds between SimilarItems polls"
    )
    parser.add_argument(
        "--deadline", type=float, default=10.0, help="seconds after a send for every stage"
    )
    parser.add_argument(
        "--follow-seconds",
        type=float,
        default=None,
        help="TAILOR_FOLLOW_SECONDS for recommend (default: the service's)",
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
