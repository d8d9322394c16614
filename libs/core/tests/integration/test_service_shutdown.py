"""A service stopped by SIGTERM under load: every acknowledged RPC's event is published once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from nats.js import JetStreamContext

from tailor_core.auth import mint_token
from tailor_core.bus import platform_streams, provision_streams
from tailor_core.migrations import core_migrations, migrate
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra
from tailor_core.testing.streams import stream_message_ids

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]

SECRET = "r" * 40
CLIENTS = 8


async def _stream_ids(js: JetStreamContext, naming: Naming) -> list[str]:
    return await stream_message_ids(js, naming.stream_name(Stream.EVENTS))


async def test_sigterm_under_load_loses_no_acknowledged_event(
    infra: Infra,
    pool: asyncpg.Pool,
    pg_schema: str,
    js: JetStreamContext,
    naming: Naming,
    worker: Callable[..., Any],
    worker_process: Callable[..., Any],
) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, pg_schema, core_migrations())
    await provision_streams(js, platform_streams(naming))
    args = {
        "dsn": infra.pg_dsn,
        "schema": pg_schema,
        "nats_url": infra.nats_url,
        "namespace": naming.namespace,
        "secret": SECRET,
    }
    service = await worker_process("serve", args)
    assert service.proc.stdout is not None
    port = json.loads(await asyncio.wait_for(service.proc.stdout.readline(), 30))["port"]
    token = mint_token(SECRET, "load", "service", ["test:write"])
    acknowledged: list[str] = []
    enough = asyncio.Event()

    async def client(number: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/tailor.test.v1.Recorder/Record")
            for i in range(100_000):
                event_id = f"c{number}-{i}"
                try:
                    await call(
                        event_id.encode(),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError:
                    return  # the server is shutting down: this one was not acknowledged
                acknowledged.append(event_id)
                if len(acknowledged) >= 300:
                    enough.set()

    clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
    await asyncio.wait_for(enough.wait(), 60)
    service.terminate()  # SIGTERM while 8 clients keep calling
    await asyncio.wait_for(asyncio.gather(*clients), 60)
    code, out = await service.finish()
    assert code == 0
    assert out[-1]["exit_code"] == 0

    # Anything still in the outbox is relayed by the next start.
    code, _ = await worker("relay", args)
    assert code == 0

    published = await _stream_ids(js, naming)
    assert len(published) == len(set(published)), "an event was published twice"
    missing = set(acknowledged) - set(published)
    assert not missing, f"{len(missing)} acknowledged events were lost"
