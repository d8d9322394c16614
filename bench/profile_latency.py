"""Ingest → profile-updated latency: events sent one by one through ingest's Track RPC at a
fixed rate (open loop), each timed from just before its send to the arrival of the
ProfileChanged whose cause_event_id is its id, read by an ephemeral JetStream consumer on the
namespace's PROFILE subjects. The raw limit, measured in the same run: envelopes of the same
size published straight to JetStream at the same rate, timed from just before the publish to
delivery through an ephemeral consumer on the same NATS.

Consent, ingest and profile run as their own processes. Subjects are served round-robin, so
each gets an event every subjects/rate seconds and the projection does not fold two of one
subject's events into one change; when it does (one ProfileChanged per profile per batch,
naming the latest event), the earlier events count as arrived with it ("coalesced").
Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers; talks only to 127.0.0.1 and
stops by itself. Prints a table, or --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import StreamSpec, connect, delete_streams, platform_streams, provision_streams
from tailor_core.envelopes import customer_event_envelope, customer_event_id, parse
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import test_infra
from tailor_core.testing.services import ServiceGroup

SECRET = "l" * 40
SOURCE = "bench-latency"
BATCH = 500
GRANTS_IN_FLIGHT = 50
WARM_UP_DEADLINE_SECONDS = 120.0


@dataclass
class LatencyProbe:
    """Send times and arrival times of messages keyed by id, per subject in send order."""

    sent_at: dict[str, float] = field(default_factory=dict)
    latency_seconds: dict[str, float] = field(default_factory=dict)
    subject_of: dict[str, str] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    coalesced: int = 0
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self, message_id: str, subject: str) -> None:
        self.all_arrived.clear()
        self.sent_at[message_id] = time.perf_counter()
        self.subject_of[message_id] = subject
        self.pending[subject].append(message_id)

    def arrived(self, message_id: str, at: float) -> None:
        """``message_id`` arrived; so did the subject's earlier messages not seen yet."""
        subject = self.subject_of.get(message_id)
        if subject is None or message_id not in self.pending[subject]:
            return  # not ours, or a redelivery
        waiting = self.pending[subject]
        position = waiting.index(message_id)
        for earlier in waiting[: position + 1]:
            self.latency_seconds[earlier] = at - self.sent_at[earlier]
        self.coalesced += position
        del waiting[: position + 1]
        if not self.outstanding:
            self.all_arrived.set()

    @property
    def outstanding(self) -> int:
        return len(self.sent_at) - len(self.latency_seconds)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def product_viewed(run: str, n: int, subject: str) -> events_pb2.CustomerEvent:
    """A Product Viewed: collected for analytics, so consent is checked at collection."""
    event = events_pb2.CustomerEvent(
        message_id=f"{run}-{n}",
        user_id=subject,
        track=events_pb2.Track(
            event="Product Viewed",
            product=events_pb2.ProductEvent(
                product=events_pb2.Product(
                    product_id=f"8512{n % 10}A",
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


async def at_fixed_rate(
    rate: float, seconds: float, send: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start ``send(n)`` on a fixed schedule whatever earlier sends are doing (open loop);
    returns the achieved starts per second."""
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return len(tasks) / elapsed if elapsed > 0 else 0.0


async def drained(probe: LatencyProbe, deadline_seconds: float) -> None:
    """Wait until every message arrived or ``deadline_seconds`` passed."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(probe.all_arrived.wait(), deadline_seconds)


def figures(probe: LatencyProbe, achieved_rate: float) -> dict[str, float]:
    latencies_ms = [s * 1000 for s in probe.latency_seconds.values()] or [float("nan")]
    return {
        "sent": len(probe.sent_at),
        "achieved_rate_per_s": achieved_rate,
        "p50_ms": statistics.median(latencies_ms),
        "p90_ms": percentile(latencies_ms, 0.90),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": max(latencies_ms),
        "lost": probe.outstanding,
        "coalesced": probe.coalesced,
    }


async def grant_analytics(channel: grpc.aio.Channel, subjects: list[str]) -> None:
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    officer = (
        ("authorization", f"Bearer {mint_token(SECRET, 'bench', 'compliance', ['consent:write'])}"),
    )
    for first in range(0, len(subjects), GRANTS_IN_FLIGHT):
        await asyncio.gather(
            *(
                stub.GrantConsent(
                    consent_pb2.GrantConsentRequest(
                        subject_id=subject,
                        purposes=["analytics"],
                        metadata=consent_pb2.DecisionMetadata(
                            source=consent_pb2.CONSENT_SOURCE_API
                        ),
                    ),
                    metadata=officer,
                )
                for subject in subjects[first : first + GRANTS_IN_FLIGHT]
            )
        )


async def profile_path(
    js: Any, naming: Naming, ingest: grpc.aio.Channel, subjects: list[str], args: argparse.Namespace
) -> dict[str, float]:
    """Warm up (a first event per subject: profiles exist, consent answers cached), then time
    Track → ProfileChanged at ``args.rate`` for ``args.seconds``."""
    staff = (
        ("authorization", f"Bearer {mint_token(SECRET, 'bench', 'compliance', ['ingest:admin'])}"),
    )
    created = await admin_pb2_grpc.IngestAdminServiceStub(ingest).CreateApiKey(
        admin_pb2.CreateApiKeyRequest(source_id=SOURCE), metadata=staff
    )
    key = (("x-api-key", created.secret),)
    stub = ingest_pb2_grpc.IngestServiceStub(ingest)
    warm_up, measured = LatencyProbe(), LatencyProbe()

    async def on_change(message: Any) -> None:
        at = time.perf_counter()
        envelope = parse(message.data)
        if envelope.HasField("profile_changed"):
            cause = envelope.profile_changed.cause_event_id
            warm_up.arrived(cause, at)
            measured.arrived(cause, at)

    subscription = await js.subscribe(
        naming.all_subjects(Stream.PROFILE), cb=on_change, ordered_consumer=True
    )
    try:
        first_events = [product_viewed("warm", n, s) for n, s in enumerate(subjects)]
        for event in first_events:
            warm_up.sent(customer_event_id(SOURCE, event.message_id), event.user_id)
        for first in range(0, len(first_events), BATCH):
            await stub.Batch(
                ingest_pb2.BatchRequest(events=first_events[first : first + BATCH]), metadata=key
            )
        await drained(warm_up, WARM_UP_DEADLINE_SECONDS)
        if warm_up.outstanding:
            raise SystemExit(f"warm-up: {warm_up.outstanding} profiles never changed")
        not_accepted = 0

        async def send(n: int) -> None:
            nonlocal not_accepted
            event = product_viewed("m", n, subjects[n % len(subjects)])
            measured.sent(customer_event_id(SOURCE, event.message_id), event.user_id)
            reply = await stub.Track(ingest_pb2.TrackRequest(event=event), metadata=key)
            not_accepted += reply.result.outcome != ingest_pb2.EVENT_OUTCOME_ACCEPTED

        achieved = await at_fixed_rate(args.rate, args.seconds, send)
        await drained(measured, args.deadline)
    finally:
        await subscription.unsubscribe()
    return figures(measured, achieved) | {"not_accepted": not_accepted}


async def raw_path(js: Any, naming: Naming, subjects: list[str], args: argparse.Namespace) -> Any:
    """The raw limit: one JetStream publish of an envelope of the same size, delivered to an
    ephemeral consumer, at the same rate for the same time."""
    stream = f"{naming.namespace.upper()}_RAWLATENCY"
    prefix = f"{naming.namespace}.rawlatency"
    await provision_streams(js, [StreamSpec(name=stream, subjects=(f"{prefix}.>",))])
    probe = LatencyProbe()

    async def on_delivery(message: Any) -> None:
        probe.arrived(message.headers["Nats-Msg-Id"], time.perf_counter())

    subscription = await js.subscribe(f"{prefix}.>", cb=on_delivery, ordered_consumer=True)
    try:
        now = datetime.now(UTC)

        async def publish(n: int) -> None:
            event = product_viewed("raw", n, subjects[n % len(subjects)])
            event.source_id = SOURCE
            envelope = customer_event_envelope(event, received_at=now)
            probe.sent(envelope.id, envelope.id)
            await js.publish(
                f"{prefix}.{n % naming.partitions}",
                envelope.SerializeToString(),
                headers={"Nats-Msg-Id": envelope.id},
            )

        achieved = await at_fixed_rate(args.rate, args.seconds, publish)
        await drained(probe, args.deadline)
    finally:
        await subscription.unsubscribe()
        await delete_streams(js, [stream])
    return figures(probe, achieved)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        group = ServiceGroup(
            infra,
            f"b{uuid.uuid4().hex[:8]}",
            SECRET,
            Path(scratch),
            names=("consent", "ingest", "profile"),
        )
        for service in group.services.values():
            service.extra_env["TAILOR_LOG_LEVEL"] = "warning"
        await group.start()
        naming = Naming(group.namespace, 4)  # ServiceGroup runs services with 4 partitions
        nc = await connect(infra.nats_url, "bench-profile-latency")
        js = nc.jetstream()
        subjects = [f"customer-{n}" for n in range(args.subjects)]
        try:
            async with (
                grpc.aio.insecure_channel(group.services["consent"].address) as consent,
                grpc.aio.insecure_channel(group.services["ingest"].address) as ingest,
            ):
                await grant_analytics(consent, subjects)
                raw = await raw_path(js, naming, subjects, args)
                profile = await profile_path(js, naming, ingest, subjects, args)
        finally:
            await group.stop()
            await group.drop_schemas()
            await delete_streams(js, [s.name for s in platform_streams(naming)])
            await nc.drain()
    return {
        "infra": infra.source,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "subjects": args.subjects,
        "deadline_seconds": args.deadline,
        **{f"raw_{k}": v for k, v in raw.items()},
        **{f"profile_{k}": v for k, v in profile.items()},
        "p50_ratio_to_raw": profile["p50_ms"] / raw["p50_ms"],
        "p99_ratio_to_raw": profile["p99_ms"] / raw["p99_ms"],
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"ingest → ProfileChanged latency, {r['rate_per_s']:.0f} events/s for "
        f"{r['seconds']:.0f} s over {r['subjects']:,} subjects, infra: {r['infra']}"
    )
    print(
        f"{'path':<38}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'sent/s':>9}{'lost':>6}"
    )
    for label, prefix in (
        ("raw JetStream publish → consumer", "raw"),
        ("ingest Track → ProfileChanged", "profile"),
    ):
        print(
            f"{label:<38}{r[f'{prefix}_p50_ms']:>9.1f}{r[f'{prefix}_p90_ms']:>9.1f}"
            f"{r[f'{prefix}_p99_ms']:>9.1f}{r[f'{prefix}_max_ms']:>9.1f}"
            f"{r[f'{prefix}_achieved_rate_per_s']:>9.1f}{r[f'{prefix}_lost']:>6}"
        )
    print(
        f"ratio to raw: p50 {r['p50_ratio_to_raw']:.1f}x, p99 {r['p99_ratio_to_raw']:.1f}x; "
        f"lost = no arrival within {r['deadline_seconds']:.0f} s of the last send; "
        f"{r['profile_coalesced']} coalesced, {r['profile_not_accepted']} not accepted by ingest"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to send")
    parser.add_argument("--subjects", type=int, default=1_000, help="subjects, round-robin")
    parser.add_argument(
        "--deadline", type=float, default=10.0, help="seconds after the last send for arrivals"
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
