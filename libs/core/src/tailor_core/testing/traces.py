"""Looking for a person in the databases: the proof that an erasure left nothing behind."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def rows_naming(pg_dsn: str, schemas: Sequence[str], needle: str) -> list[str]:
    """Every ``schema.table.column`` in ``schemas`` with a value that contains ``needle``
    (text, JSON, arrays, and the raw bytes of bytea columns)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        columns = await conn.fetch(
            "SELECT table_schema, table_name, column_name, data_type"
            " FROM information_schema.columns WHERE table_schema = ANY($1::text[])"
            " AND data_type IN ('text', 'character varying', 'jsonb', 'bytea', 'ARRAY')",
            list(schemas),
        )
        found = []
        for col in columns:
            table = f'"{col["table_schema"]}"."{col["table_name"]}"'
            column = f'"{col["column_name"]}"'
            if col["data_type"] == "bytea":  # the raw bytes, not the hex text form
                condition = f"position(convert_to($1, 'UTF8') in {column}) > 0"
            else:
                condition = f"strpos({column}::text, $1) > 0"
            if await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {condition}", needle):
                found.append(f"{col['table_schema']}.{col['table_name']}.{col['column_name']}")
        return found
    finally:
        await conn.close()
