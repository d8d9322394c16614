"""A separate OS process for the crash and race tests: migrate, relay, or consume.

Run as ``python worker.py <command> --json '<args>'``; it prints one JSON line with what it
did. Tests SIGKILL it through ``TAILOR_FAILPOINTS`` or SIGTERM it from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import asyncpg

from tailor_core.bus import ConsumerSpec, connect
from tailor_core.db import create_pool
from tailor_core.migrations import core_migrations, migrate
from tailor_core.outbox import OutboxRelay
from tailor_core.streams import Naming, Stream


async def do_migrate(args: dict[str, Any]) -> dict[str, Any]:
    conn = await asyncpg.connect(args["dsn"])
    try:
        applied = await migrate(conn, args["schema"], core_migrations())
    finally:
        await conn.close()
    return {"applied": [m.version for m in applied]}


async def do_relay(args: dict[str, Any]) -> dict[str, Any]:
    pool = await create_pool(args["dsn"], args["schema"])
    nc = await connect(args["nats_url"], "worker-relay")
    relay = OutboxRelay(pool, nc.jetstream(), args["schema"], batch_size=args.get("batch", 500))
    relayed = 0
    while (count := await relay.relay_once()) > 0:
        relayed += count
    await nc.drain()
    await pool.close()
    return {"relayed": relayed}


async def record_in_projection(conn: asyncpg.Connection, message: Any) -> None:
    await conn.execute(
        "INSERT INTO projection (event_id, subject, hits) VALUES ($1, $2, 1) "
        "ON CONFLICT (event_id) DO UPDATE SET hits = projection.hits + 1",
        message.event_id,
        message.subject,
    )


async def do_consume(args: dict[str, Any]) -> dict[str, Any]:
    """Consume into ``projection`` until SIGTERM (graceful) or ``until`` rows exist."""
    from tailor_core.inbox import InboxConsumer

    naming = Naming(args["namespace"], partitions=4)
    pool = await create_pool(args["dsn"], args["schema"])
    nc = await connect(args["nats_url"], "worker-consume")
    consumer = InboxConsumer(
        pool=pool,
        js=nc.jetstream(),
        spec=ConsumerSpec(
            stream=naming.stream_name(Stream.EVENTS),
            durable=args["durable"],
            filter_subject=naming.all_subjects(Stream.EVENTS),
            ack_wait_seconds=args.get("ack_wait", 30.0),
            max_deliver=args.get("max_deliver", 5),
        ),
        handler=record_in_projection,
        dead_letter_subject=naming.dead_letter_subject("worker", args["durable"]),
        batch_size=args.get("batch", 50),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(consumer.stop()))
    task = asyncio.ensure_future(consumer.run())
    print(json.dumps({"ready": True}), flush=True)
    await task
    await nc.drain()
    await pool.close()
    return {"processed": consumer.processed_total, "duplicates": consumer.duplicates_total}


async def do_serve(args: dict[str, Any]) -> dict[str, Any]:
    """A gRPC service whose one RPC commits an event to the outbox; runs until SIGTERM.

    Wired like a real service: ServiceRuntime, GrpcServer, outbox relay in the background.
    """
    import grpc

    from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier
    from tailor_core.lifecycle import ServiceRuntime
    from tailor_core.outbox import OutboundMessage, enqueue
    from tailor_core.server import ServiceBinding, build_server

    naming = Naming(args["namespace"], partitions=4)
    pool = await create_pool(args["dsn"], args["schema"])
    nc = await connect(args["nats_url"], "worker-serve")
    relay = OutboxRelay(pool, nc.jetstream(), args["schema"])
    runtime = ServiceRuntime(grace_seconds=10)
    runtime.on_shutdown(pool.close)
    runtime.on_shutdown(nc.drain)

    async def record(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        event_id = request.decode()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(
                conn,
                [OutboundMessage(event_id, naming.event_subject(event_id, "Recorded"), request)],
            )
        return request

    handler = grpc.method_handlers_generic_handler(
        "tailor.test.v1.Recorder",
        {"Record": grpc.unary_unary_rpc_method_handler(record, bytes, bytes)},
    )
    server = build_server(
        service_name="recorder",
        services=[
            ServiceBinding(
                lambda _s, srv: srv.add_generic_rpc_handlers((handler,)),
                None,
                "tailor.test.v1.Recorder",
            )
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(args["secret"])),
        host="127.0.0.1",
        port=0,
        scope_resolver=lambda method: "test:write",
    )
    runtime.background(relay.run, stop=relay.stop)
    await server.start()
    runtime.serve(server)
    await server.set_serving()
    print(json.dumps({"port": server.port}), flush=True)
    code = await runtime.wait()
    return {"exit_code": code, "relayed": relay.published_total}


COMMANDS = {"migrate": do_migrate, "relay": do_relay, "consume": do_consume, "serve": do_serve}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--json", required=True)
    ns = parser.parse_args()
    result = asyncio.run(COMMANDS[ns.command](json.loads(ns.json)))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
