"""Pytest fixtures: one Postgres and NATS per session, a fresh schema and namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.db import create_pool, quote_ident
from tailor_core.streams import Naming, Stream
from tailor_core.testing.infra import Infra, test_infra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Real Postgres and NATS for the whole session."""
    with test_infra(tmp_path_factory.mktemp("infra")) as found:
        yield found


def unique_name(prefix: str = "t") -> str:
    """A short random lower-case identifier, valid as schema, namespace and durable name."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pg_schema(infra: Infra) -> AsyncIterator[str]:
    """A schema of its own for one test, dropped afterwards."""
    schema = unique_name("t_")
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        yield schema
        await conn.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def pool(infra: Infra, pg_schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool bound to the test's schema."""
    created = await create_pool(infra.pg_dsn, pg_schema, max_size=5)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def naming() -> Naming:
    """A namespace of its own for one test (stream names and subjects)."""
    return Naming(namespace=unique_name("t"), partitions=4)


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[NatsClient]:
    client = await connect(infra.nats_url, name="tailor-tests")
    try:
        yield client
    finally:
        await client.drain()


@pytest.fixture
async def js(nc: NatsClient, naming: Naming) -> AsyncIterator[JetStreamContext]:
    """JetStream; the test namespace's streams are deleted afterwards."""
    context = nc.jetstream()
    try:
        yield context
    finally:
        await delete_streams(context, [spec.name for spec in platform_streams(naming)])


__all__ = ["Stream", "infra", "js", "naming", "nc", "pg_schema", "pool", "unique_name"]
