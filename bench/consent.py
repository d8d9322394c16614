"""Consent figures: CheckConsent RPC latency under 50 concurrent callers, cached checks in a
client, and withdrawal propagation from the consent service to another process's client.

The consent service runs as its own process. The raw limit measured in the same run is a
gRPC health check (an RPC that touches no database) under the same concurrency.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor.consent.v1 import consent_pb2 as pb
from tailor.consent.v1 import consent_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.consent_client import ConsentClient, ServiceToken
from tailor_core.streams import Naming
from tailor_core.testing.infra import test_infra
from tailor_core.testing.services import ServiceProcess
from tailor_core.testing.waiting import wait_until

SECRET = "b" * 40
META = pb.DecisionMetadata(source=pb.CONSENT_SOURCE_API)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def concurrent_latencies(
    call: Callable[[int], Awaitable[object]], callers: int, per_caller: int
) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def caller(n: int) -> None:
        for i in range(per_caller):
            started = time.perf_counter()
            await call(n * per_caller + i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    return latencies, len(latencies) / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        namespace = f"b{uuid.uuid4().hex[:8]}"
        service = ServiceProcess(
            "consent",
            infra,
            schema=f"{namespace}_consent",
            namespace=namespace,
            secret=SECRET,
            log_dir=Path(scratch),
        )
        await service.start()
        nc = await connect(infra.nats_url, "bench-consent")
        naming = Naming(namespace, 4)
        officer = (
            (
                "authorization",
                f"Bearer {mint_token(SECRET, 'bench', 'compliance', ['consent:write'])}",
            ),
        )
        checker = (
            (
                "authorization",
                f"Bearer {mint_token(SECRET, 'bench', 'service', ['consent:check'])}",
            ),
        )
        try:
            async with grpc.aio.insecure_channel(service.address) as channel:
                stub = consent_pb2_grpc.ConsentServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                for i in range(args.subjects):
                    await stub.GrantConsent(
                        pb.GrantConsentRequest(
                            subject_id=f"s{i}", purposes=["analytics"], metadata=META
                        ),
                        metadata=officer,
                    )
                raw, raw_qps = await concurrent_latencies(
                    lambda i: health.Check(health_pb2.HealthCheckRequest()),
                    args.callers,
                    args.per_caller,
                )
                rpc, rpc_qps = await concurrent_latencies(
                    lambda i: stub.CheckConsent(
                        pb.CheckConsentRequest(
                            subject_id=f"s{i % args.subjects}", purpose="analytics"
                        ),
                        metadata=checker,
                    ),
                    args.callers,
                    args.per_caller,
                )
                gate = ConsentClient(
                    nats=nc,
                    naming=naming,
                    consent_addr=service.address,
                    token=ServiceToken(SECRET, "bench", ["consent:check"]),
                )
                await gate.start()
                for i in range(args.subjects):
                    await gate.check(f"s{i}", "analytics")
                cached, _ = await concurrent_latencies(
                    lambda i: gate.check(f"s{i % args.subjects}", "analytics"), 1, 5000
                )
                propagation = []
                for i in range(args.rounds):
                    subject = f"p{i}"
                    await stub.GrantConsent(
                        pb.GrantConsentRequest(
                            subject_id=subject, purposes=["marketing"], metadata=META
                        ),
                        metadata=officer,
                    )

                    async def in_cache(subject: str = subject) -> bool:
                        return (await gate.check(subject, "marketing")).cached

                    await wait_until(in_cache, timeout=10, interval=0.002)
                    started = time.perf_counter()
                    await stub.WithdrawConsent(
                        pb.WithdrawConsentRequest(
                            subject_id=subject, purposes=["marketing"], metadata=META
                        ),
                        metadata=officer,
                    )

                    async def denied(subject: str = subject) -> bool:
                        return not (await gate.check(subject, "marketing")).allowed

                    await wait_until(denied, timeout=10, interval=0.001)
                    propagation.append(time.perf_counter() - started)
                await gate.close()
        finally:
            service.stop()
            await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])
            await nc.drain()
    ms = 1000.0
    return {
        "infra": infra.source,
        "callers": args.callers,
        "raw_health_rpc_p50_ms": statistics.median(raw) * ms,
        "raw_health_rpc_p99_ms": percentile(raw, 0.99) * ms,
        "raw_health_rpc_qps": raw_qps,
        "consent_check_p50_ms": statistics.median(rpc) * ms,
        "consent_check_p99_ms": percentile(rpc, 0.99) * ms,
        "consent_check_qps": rpc_qps,
        "consent_check_ratio_to_raw_qps": rpc_qps / raw_qps,
        "cached_check_p50_us": statistics.median(cached) * 1e6,
        "cached_check_p99_us": percentile(cached, 0.99) * 1e6,
        "withdrawal_propagation_p50_ms": statistics.median(propagation) * ms,
        "withdrawal_propagation_p99_ms": percentile(propagation, 0.99) * ms,
        "withdrawal_rounds": len(propagation),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--per-caller", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50, help="withdrawal propagation rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    print(f"consent — {args.callers} concurrent callers, infra: {r['infra']}")
    rows = [
        (
            "raw gRPC health check (limit)",
            r["raw_health_rpc_p50_ms"],
            r["raw_health_rpc_p99_ms"],
            "ms",
            r["raw_health_rpc_qps"],
        ),
        (
            "CheckConsent RPC",
            r["consent_check_p50_ms"],
            r["consent_check_p99_ms"],
            "ms",
            r["consent_check_qps"],
        ),
        (
            "cached check in a client",
            r["cached_check_p50_us"],
            r["cached_check_p99_us"],
            "us",
            None,
        ),
        (
            "withdrawal propagation",
            r["withdrawal_propagation_p50_ms"],
            r["withdrawal_propagation_p99_ms"],
            "ms",
            None,
        ),
    ]
    print(f"{'figure':<34}{'p50':>12}{'p99':>12}{'per s':>10}")
    for name, p50, p99, unit, rate in rows:
        per_second = f"{rate:,.0f}" if rate is not None else ""
        print(f"{name:<34}{p50:>10.2f}{unit}{p99:>10.2f}{unit}{per_second:>10}")
    print(f"CheckConsent throughput / raw limit: {r['consent_check_ratio_to_raw_qps']:.2f}")


if __name__ == "__main__":
    main()
