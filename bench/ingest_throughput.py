"""Ingest figures: events/s through Batch and StreamEvents against raw JetStream publishing
from Python measured in the same run, unary Track latency at a fixed rate, and peak memory
of the ingest process under overload.

Consent and ingest run as their own processes. The raw limit publishes envelopes of the same
size with nats-py, 500 acknowledged publishes in flight per publisher, as ingest does.
Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers. Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psutil

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import (
    StreamSpec,
    connect,
    delete_streams,
    platform_streams,
    provision_streams,
    publish_acked,
)
from tailor_core.envelopes import customer_event_envelope
from tailor_core.streams import Naming
from tailor_core.testing.infra import test_infra
from tailor_core.testing.services import ServiceGroup

SECRET = "q" * 40
BATCH = 500


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def order(run: str, n: int, subjects: int) -> events_pb2.CustomerEvent:
    """A realistic Order Completed: three lines, context, a client message id."""
    event = events_pb2.CustomerEvent(
        message_id=f"{run}-{n}",
        user_id=f"customer-{n % subjects}",
        track=events_pb2.Track(
            event="Order Completed",
            order=events_pb2.OrderEvent(
                order_id=f"{run}-{n}",
                products=[
                    events_pb2.Product(
                        product_id=f"8512{line}A",
                        name="WHITE HANGING HEART T-LIGHT HOLDER",
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
    event.context.locale = "en-GB"
    event.context.channel = "web"
    return event


async def raw_publish(
    js: Any, naming: Naming, events: list[Any], publishers: int, *, pipelined: bool
) -> float:
    """Raw limit: the same envelopes published straight to JetStream; events/s.

    ``pipelined`` False: ``js.publish`` (a round trip each, 500 in flight); True:
    ``publish_acked`` (nats-py's publish_async, every ack awaited at once), as ingest does.
    """
    name = f"{naming.namespace.upper()}_RAW"
    await provision_streams(js, [StreamSpec(name=name, subjects=(f"{naming.namespace}.raw.>",))])
    now = datetime.now(UTC)
    payloads = [customer_event_envelope(e, received_at=now) for e in events]
    chunks = [payloads[i : i + BATCH] for i in range(0, len(payloads), BATCH)]
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def publisher() -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            messages = [
                (
                    f"{naming.namespace}.raw.{m.subject}",
                    m.SerializeToString(),
                    {"Nats-Msg-Id": m.id},
                )
                for m in chunk
            ]
            if pipelined:
                await publish_acked(js, messages)
            else:
                await asyncio.gather(*(js.publish(s, p, headers=h) for s, p, h in messages))

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(publishers)))
    elapsed = time.perf_counter() - started
    await delete_streams(js, [name])
    return len(events) / elapsed


async def batch_path(stub: Any, key: Any, events: list[Any], clients: int) -> float:
    chunks = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        while not queue.empty():
            chunk = queue.get_nowait()
            reply = await stub.Batch(ingest_pb2.BatchRequest(events=chunk), metadata=key)
            accepted += sum(r.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for r in reply.results)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    assert accepted == len(events), f"only {accepted} of {len(events)} accepted"
    return len(events) / elapsed


async def stream_path(stub: Any, key: Any, events: list[Any], streams: int) -> float:
    share = len(events) // streams
    accepted = 0

    async def one(part: list[Any]) -> None:
        nonlocal accepted

        async def requests() -> AsyncIterator[ingest_pb2.StreamEventsRequest]:
            for first in range(0, len(part), BATCH):
                yield ingest_pb2.StreamEventsRequest(
                    events=[
                        ingest_pb2.SequencedEvent(sequence=first + i, event=e)
                        for i, e in enumerate(part[first : first + BATCH])
                    ]
                )

        async for response in stub.StreamEvents(requests(), metadata=key):
            accepted += sum(
                a.result.outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED for a in response.acks
            )

    parts = [events[i * share : (i + 1) * share] for i in range(streams)]
    started = time.perf_counter()
    await asyncio.gather(*(one(part) for part in parts))
    elapsed = time.perf_counter() - started
    assert accepted == share * streams, f"only {accepted} accepted"
    return accepted / elapsed


async def unary_latency(stub: Any, key: Any, run: str, rate: float, seconds: float) -> list[float]:
    """Open loop: calls start on a fixed schedule whatever the previous ones are doing."""
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        await stub.Track(ingest_pb2.TrackRequest(event=order(run, n, 1000)), metadata=key)
        latencies.append(time.perf_counter() - started)

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies


async def overload(
    stub: Any, key: Any, pid: int, run: str, clients: int, batches: int
) -> dict[str, float]:
    """``clients`` callers at once, each sending ``batches`` full batches back to back."""
    process = psutil.Process(pid)
    idle = process.memory_info().rss
    peak = idle
    codes: dict[str, int] = {}
    prepared = [
        [
            ingest_pb2.BatchRequest(
                events=[order(f"{run}-{c}-{b}", i, 5000) for i in range(BATCH)]
            ).SerializeToString()
            for b in range(batches)
        ]
        for c in range(clients)
    ]
    running = True

    async def client(bodies: list[bytes]) -> None:
        for body in bodies:
            try:
                await stub.Batch(ingest_pb2.BatchRequest.FromString(body), metadata=key)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            codes[code] = codes.get(code, 0) + 1

    async def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client(bodies) for bodies in prepared))
    running = False
    await sampler
    return {
        "idle_rss_mib": idle / 2**20,
        "peak_rss_mib": peak / 2**20,
        "calls_ok": codes.get("OK", 0),
        "calls_refused": codes.get("RESOURCE_EXHAUSTED", 0),
        "calls_other": sum(v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        group = ServiceGroup(
            infra, f"b{uuid.uuid4().hex[:8]}", SECRET, Path(scratch), names=("consent", "ingest")
        )
        services = group.services
        services["ingest"].extra_env["TAILOR_LOG_LEVEL"] = "warning"
        await group.start()
        namespace = group.namespace
        nc = await connect(infra.nats_url, "bench-ingest")
        js = nc.jetstream()
        naming = Naming(namespace, 4)
        staff = (
            (
                "authorization",
                f"Bearer {mint_token(SECRET, 'bench', 'compliance', ['ingest:admin'])}",
            ),
        )
        figures: dict[str, list[float]] = {"raw": [], "raw_async": [], "batch": [], "stream": []}
        try:
            async with grpc.aio.insecure_channel(services["ingest"].address) as channel:
                admin = admin_pb2_grpc.IngestAdminServiceStub(channel)
                created = await admin.CreateApiKey(
                    admin_pb2.CreateApiKeyRequest(
                        source_id="bench", rate_limit_per_second=1_000_000, burst=10_000_000
                    ),
                    metadata=staff,
                )
                key = (("x-api-key", created.secret),)
                stub = ingest_pb2_grpc.IngestServiceStub(channel)
                # Warm-up: consent answers for every subject are cached from here on.
                await batch_path(
                    stub,
                    key,
                    [order("warm", n, args.subjects) for n in range(args.subjects)],
                    args.clients,
                )
                for round_ in range(args.rounds):
                    batch_events = [
                        order(f"b{round_}", n, args.subjects) for n in range(args.events)
                    ]
                    stream_events = [
                        order(f"s{round_}", n, args.subjects) for n in range(args.events)
                    ]
                    raw_events = [order(f"r{round_}", n, args.subjects) for n in range(args.events)]
                    figures["raw"].append(
                        await raw_publish(js, naming, raw_events, args.clients, pipelined=False)
                    )
                    figures["raw_async"].append(
                        await raw_publish(js, naming, raw_events, args.clients, pipelined=True)
                    )
                    figures["batch"].append(await batch_path(stub, key, batch_events, args.clients))
                    figures["stream"].append(
                        await stream_path(stub, key, stream_events, args.clients)
                    )
                latencies = await unary_latency(stub, key, "u", args.rate, args.seconds)
                process = services["ingest"].proc
                assert process is not None
                memory = await overload(
                    stub,
                    key,
                    process.pid,
                    "o",
                    args.overload_clients,
                    2,
                )
        finally:
            await group.stop()
            await group.drop_schemas()
            await delete_streams(js, [s.name for s in platform_streams(naming)])
            await nc.drain()
    raw = statistics.median(figures["raw"])
    raw_async = statistics.median(figures["raw_async"])
    batch = statistics.median(figures["batch"])
    stream = statistics.median(figures["stream"])
    return {
        "infra": infra.source,
        "events_per_round": args.events,
        "rounds": args.rounds,
        "clients": args.clients,
        "raw_js_publish_per_s": raw,
        "raw_js_publish_async_per_s": raw_async,
        "ingest_ratio_to_publish_async": max(batch, stream) / raw_async,
        "ingest_batch_events_per_s": batch,
        "ingest_stream_events_per_s": stream,
        "ingest_events_per_s": max(batch, stream),
        "ingest_batch_ratio": batch / raw,
        "ingest_stream_ratio": stream / raw,
        "ingest_ratio": max(batch, stream) / raw,
        "unary_track_rate_per_s": args.rate,
        "unary_track_p50_ms": statistics.median(latencies) * 1000,
        "unary_track_p99_ms": percentile(latencies, 0.99) * 1000,
        "overload_clients": args.overload_clients,
        **{f"overload_{k}": v for k, v in memory.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent batch clients, streams, publishers"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="unary Track calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="unary latency phase")
    parser.add_argument("--overload-clients", type=int, default=80)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"ingest — {args.events:,} events per path, median of {args.rounds} rounds, "
        f"{args.clients} clients, infra: {r['infra']}"
    )
    rows = [
        ("raw nats-py js.publish (limit)", r["raw_js_publish_per_s"], 1.0),
        (
            "raw nats-py js.publish_async, acks at once",
            r["raw_js_publish_async_per_s"],
            r["raw_js_publish_async_per_s"] / r["raw_js_publish_per_s"],
        ),
        ("ingest Batch (500 per call)", r["ingest_batch_events_per_s"], r["ingest_batch_ratio"]),
        (
            "ingest StreamEvents (500 per message)",
            r["ingest_stream_events_per_s"],
            r["ingest_stream_ratio"],
        ),
    ]
    print(f"{'path':<40}{'events/s':>12}{'ratio to raw':>14}")
    for name, rate, ratio in rows:
        print(f"{name:<40}{rate:>12,.0f}{ratio:>14.2f}")
    print(
        f"unary Track at {args.rate:.0f}/s: p50 {r['unary_track_p50_ms']:.1f} ms, "
        f"p99 {r['unary_track_p99_ms']:.1f} ms"
    )
    print(
        f"overload ({args.overload_clients} clients x 2 batches of 500 at once): "
        f"RSS {r['overload_idle_rss_mib']:.0f} MiB idle, {r['overload_peak_rss_mib']:.0f} MiB "
        f"peak; {r['overload_calls_ok']} calls served, {r['overload_calls_refused']} refused "
        f"(RESOURCE_EXHAUSTED), {r['overload_calls_other']} other"
    )


if __name__ == "__main__":
    main()
