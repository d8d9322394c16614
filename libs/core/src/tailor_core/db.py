"""Postgres access for a service: a pool bound to its own schema, and schema provisioning.

Each service owns one schema and one role (``tailor_<service>``) and gets no grant on any
other schema, so "no service reads another's tables" is enforced by Postgres itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

#: A connection as handlers receive it: a plain one or one borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_ident(name: str) -> str:
    """Quote a schema or role name we generated ourselves; reject anything unexpected."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid identifier: {name!r}")
    return f'"{name}"'


def role_for(service: str) -> str:
    """The Postgres role a service runs as."""
    return f"tailor_{service}"


async def create_pool(
    dsn: str,
    schema: str,
    *,
    application_name: str = "tailor",
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """Open a pool whose connections see only ``schema`` on their search path.

    The schema must exist (see :func:`provision_service_database` or the migrations).
    """
    quote_ident(schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema, "application_name": application_name},
    )
    if pool is None:  # pragma: no cover - asyncpg returns None only when not awaited
        raise RuntimeError("asyncpg did not create a pool")
    return pool


def dsn_with_user(dsn: str, user: str) -> str:
    """``dsn`` with its user replaced (password dropped: the new role authenticates on its own)."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password, for printing."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def provision_service_database(
    admin_dsn: str, service: str, schema: str | None = None
) -> str:
    """Create the service's role and the schema it owns, idempotently; return its DSN.

    Used by ``tailor up`` and the test harness, where the admin DSN is a superuser on a
    trusted local server. In production the same objects come from the deployment
    (infra/), and each service receives its own DSN with a password from a Secret.
    """
    role = role_for(service)
    schema = schema or service
    conn = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            # Serialise concurrent provisioning (two launchers, parallel tests).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tailor.provision'))")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await conn.execute(f"CREATE ROLE {quote_ident(role)} LOGIN")
            await conn.execute(
                f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)} "
                f"AUTHORIZATION {quote_ident(role)}"
            )
            # A schema created earlier by someone else still ends up owned by the service.
            await conn.execute(f"ALTER SCHEMA {quote_ident(schema)} OWNER TO {quote_ident(role)}")
            await conn.execute(f"REVOKE ALL ON SCHEMA public FROM {quote_ident(role)}")
    finally:
        await conn.close()
    return dsn_with_user(admin_dsn, role)
