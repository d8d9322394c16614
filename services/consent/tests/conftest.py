"""A consent service wired as in bootstrap, on a test schema and namespace, with its relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from nats.js import JetStreamContext

from tailor.consent.v1 import audit_pb2_grpc, consent_pb2_grpc, keys_pb2_grpc
from tailor_consent.entrypoints.grpc import AuditServicer, ConsentServicer, KeyServicer
from tailor_consent.key_service import KeyService
from tailor_consent.ledger_service import ConsentLedger
from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.bus import platform_streams, provision_streams
from tailor_core.migrations import core_migrations, load_migrations, migrate
from tailor_core.outbox import OutboxRelay
from tailor_core.server import ServiceBinding, build_server
from tailor_core.streams import Naming

SECRET = "c" * 40
MASTER_KEYS = {"m1": bytes(range(32)), "m2": bytes(range(32, 64))}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ConsentHarness:
    address: str
    ledger: ConsentLedger
    pool: asyncpg.Pool
    js: JetStreamContext
    naming: Naming
    clock: Clock
    keys: KeyService

    def credentials(
        self, *scopes: str, sub: str = "officer-1", kind: str = "compliance"
    ) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(SECRET, sub, kind, scopes)}"),)  # type: ignore[arg-type]


@pytest.fixture
async def consent(
    pool: asyncpg.Pool, pg_schema: str, js: JetStreamContext, naming: Naming
) -> AsyncIterator[ConsentHarness]:
    async with pool.acquire() as conn:
        await migrate(
            conn,
            pg_schema,
            [*core_migrations(), *load_migrations("consent", "tailor_consent.migrations")],
        )
    await provision_streams(js, platform_streams(naming))
    clock = Clock()
    ledger = ConsentLedger(pool, naming, clock=clock)
    await ledger.start()
    keys = KeyService(pool, ledger, dict(MASTER_KEYS), "m1")
    server = build_server(
        service_name="consent",
        services=[
            ServiceBinding(
                consent_pb2_grpc.add_ConsentServiceServicer_to_server,
                ConsentServicer(ledger),
                "tailor.consent.v1.ConsentService",
            ),
            ServiceBinding(
                audit_pb2_grpc.add_AuditServiceServicer_to_server,
                AuditServicer(pool),
                "tailor.consent.v1.AuditService",
            ),
            ServiceBinding(
                keys_pb2_grpc.add_KeyServiceServicer_to_server,
                KeyServicer(keys),
                "tailor.consent.v1.KeyService",
            ),
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
    )
    relay = OutboxRelay(pool, js, pg_schema, poll_seconds=0.2)
    relay_task = asyncio.create_task(relay.run())
    await server.start()
    await server.set_serving()
    try:
        yield ConsentHarness(f"127.0.0.1:{server.port}", ledger, pool, js, naming, clock, keys)
    finally:
        await server.stop(0)
        await relay.stop()
        await asyncio.wait_for(relay_task, 10)


@pytest.fixture
async def stub(consent: ConsentHarness) -> AsyncIterator[consent_pb2_grpc.ConsentServiceStub]:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


WRITE = ("consent:write", "consent:read", "consent:check", "consent:admin", "audit:read")
CredentialsFor = Callable[..., tuple[tuple[str, str], ...]]
