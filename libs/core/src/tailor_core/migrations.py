"""Versioned SQL migrations, applied under an advisory lock so replicas never race.

Migrations are files ``NNNN_description.sql`` shipped inside a package. A *component*
(``tailor_core`` or a service name) has its own version sequence; all components of a
service live in that service's schema and are recorded in ``schema_migrations``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from tailor_core.db import Connection, quote_ident

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations on disk disagree with what the database recorded."""


@dataclass(frozen=True, slots=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(component: str, package: str) -> list[Migration]:
    """Read ``package``'s ``NNNN_name.sql`` files, in version order."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(component, int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{component}: versions must be 1..n without gaps, got {versions}")
    return found


def core_migrations() -> list[Migration]:
    """The core's own tables (outbox, inbox), applied into every service schema first."""
    return load_migrations("tailor_core", "tailor_core.sql")


async def migrate(
    conn: Connection, schema: str, migrations: Sequence[Migration]
) -> list[Migration]:
    """Apply the ``migrations`` not yet recorded in ``schema``; return those applied.

    Runs in one transaction holding a transaction-level advisory lock keyed on the schema:
    a second replica starting at the same moment waits, then finds nothing left to do.
    """
    schema_sql = quote_ident(schema)
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tailor.migrate.' || $1, 0))", schema
        )
        # A service role may lack CREATE on the database: create only what is missing.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {schema_sql}")
        await conn.execute(f"SET LOCAL search_path TO {schema_sql}")
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                component  text        NOT NULL,
                version    integer     NOT NULL,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )
            """
        )
        recorded = {
            (row["component"], row["version"]): row["checksum"]
            for row in await conn.fetch(
                "SELECT component, version, checksum FROM schema_migrations"
            )
        }
        for migration in migrations:
            key = (migration.component, migration.version)
            if key in recorded:
                if recorded[key] != migration.checksum:
                    raise MigrationError(
                        f"{migration.component} migration {migration.version:04d}_{migration.name} "
                        "was changed after it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, name, checksum) "
                "VALUES ($1, $2, $3, $4)",
                migration.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied.append(migration)
    return applied
