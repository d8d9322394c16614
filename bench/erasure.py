"""Erasure completion time: one subject, and many subjects at once.

All five services run as separate processes and every one of them confirms its step; the
request is complete when the consent service has purged the subject's messages from every
stream and destroyed its key. The figure for one subject is the median of several requests;
for many, the wall time from the first request to the last completion. The raw limit in the
same run is one RPC round trip to the consent service (GetPrivacyRequest).

Uses TAILOR_PG_DSN / TAILOR_NATS_URL, else embedded servers. Prints a table, or --json.
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
from pathlib import Path
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient

from tailor.common.v1 import common_pb2
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.infra import test_infra
from tailor_core.testing.services import ServiceGroup
from tailor_core.testing.waiting import wait_until

SECRET = "e" * 40
OFFICER = (
    ("authorization", f"Bearer {mint_token(SECRET, 'bench', 'compliance', ['privacy:admin'])}"),
)
COMPLETED = privacy_pb2.REQUEST_STATE_COMPLETED


async def _erase(stub: privacy_pb2_grpc.PrivacyServiceStub, subject: str) -> float:
    started = time.perf_counter()
    request = await stub.RequestErasure(
        privacy_pb2.RequestErasureRequest(subject_id=subject, confirm=True), metadata=OFFICER
    )

    async def done() -> bool:
        view = await stub.GetPrivacyRequest(
            privacy_pb2.GetPrivacyRequestRequest(request_id=request.request_id), metadata=OFFICER
        )
        return bool(view.state == COMPLETED)

    await wait_until(done, timeout=600, interval=0.01)
    return time.perf_counter() - started


async def _erase_many(stub: privacy_pb2_grpc.PrivacyServiceStub, count: int) -> float:
    started = time.perf_counter()
    limit = asyncio.Semaphore(50)

    async def one(i: int) -> str:
        async with limit:
            request = await stub.RequestErasure(
                privacy_pb2.RequestErasureRequest(subject_id=f"many-{i}", confirm=True),
                metadata=OFFICER,
            )
            return str(request.request_id)

    ids = set(await asyncio.gather(*(one(i) for i in range(count))))

    async def all_done() -> bool:
        listing = await stub.ListPrivacyRequests(
            privacy_pb2.ListPrivacyRequestsRequest(
                state=COMPLETED, page=common_pb2.PageRequest(page_size=500)
            ),
            metadata=OFFICER,
        )
        finished = {r.request_id for r in listing.requests}
        token = listing.page.next_page_token
        while token:
            listing = await stub.ListPrivacyRequests(
                privacy_pb2.ListPrivacyRequestsRequest(
                    state=COMPLETED, page=common_pb2.PageRequest(page_size=500, page_token=token)
                ),
                metadata=OFFICER,
            )
            finished |= {r.request_id for r in listing.requests}
            token = listing.page.next_page_token
        return ids <= finished

    await wait_until(all_done, timeout=1800, interval=1.0)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, test_infra(Path(scratch)) as infra:
        group = ServiceGroup(infra, f"e{uuid.uuid4().hex[:8]}", SECRET, Path(scratch))
        await group.start()
        nc: NatsClient = await connect(infra.nats_url, "bench-erasure")
        try:
            async with grpc.aio.insecure_channel(group.consent.address) as channel:
                stub = privacy_pb2_grpc.PrivacyServiceStub(channel)
                ping = []
                for _ in range(50):
                    started = time.perf_counter()
                    # NOT_FOUND: a full round trip all the same
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.GetPrivacyRequest(
                            privacy_pb2.GetPrivacyRequestRequest(request_id=str(uuid.uuid4())),
                            metadata=OFFICER,
                        )
                    ping.append(time.perf_counter() - started)
                single = [await _erase(stub, f"one-{i}") for i in range(args.single)]
                many = await _erase_many(stub, args.many)
        finally:
            await group.stop()
            await group.drop_schemas()
            await delete_streams(
                nc.jetstream(), [s.name for s in platform_streams(Naming(group.namespace))]
            )
            await nc.drain()
    return {
        "infra": infra.source,
        "holders": len(group.services),
        "rpc_round_trip_ms": statistics.median(ping) * 1000,
        "erasure_one_subject_s": statistics.median(single),
        "erasure_one_subject_max_s": max(single),
        "erasure_many_subjects": args.many,
        "erasure_many_subjects_s": many,
        "erasures_per_s": args.many / many,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--single", type=int, default=5, help="one-subject erasures to take the median of"
    )
    parser.add_argument("--many", type=int, default=1000, help="subjects erased at once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"erasure — {r['holders']} services confirming each request, infra: {r['infra']}")
    rows = [
        ("consent RPC round trip (limit)", f"{r['rpc_round_trip_ms']:.2f} ms"),
        (f"one subject, median of {args.single}", f"{r['erasure_one_subject_s']:.3f} s"),
        ("one subject, slowest", f"{r['erasure_one_subject_max_s']:.3f} s"),
        (f"{r['erasure_many_subjects']} subjects at once", f"{r['erasure_many_subjects_s']:.1f} s"),
        ("  throughput", f"{r['erasures_per_s']:.1f} erasures/s"),
    ]
    for name, value in rows:
        print(f"  {name:<34}{value:>16}")


if __name__ == "__main__":
    main()
