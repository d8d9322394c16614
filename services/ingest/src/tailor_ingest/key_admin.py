"""Managing API keys: create (the secret is shown once), read, list, change, revoke."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from tailor_core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from tailor_ingest.adapters import repository
from tailor_ingest.api_keys import ApiKeyRegistry
from tailor_ingest.domain.api_keys import (
    DEFAULT_SCOPES,
    KEY_ID,
    ApiKey,
    check_key_fields,
    new_secret,
)

UPDATABLE = ("label", "scopes", "rate_limit_per_second", "burst", "expires_at")


class KeyAdmin:
    def __init__(self, pool: asyncpg.Pool, registry: ApiKeyRegistry) -> None:
        self._pool = pool
        self._registry = registry

    async def create(
        self,
        *,
        source_id: str,
        scopes: tuple[str, ...],
        rate_limit_per_second: int,
        burst: int,
        label: str,
        expires_at: datetime | None,
        created_by: str,
    ) -> tuple[ApiKey, str]:
        check_key_fields(
            source_id=source_id,
            scopes=scopes,
            rate_limit_per_second=rate_limit_per_second,
            burst=burst,
            label=label,
            expires_at=expires_at,
            now=datetime.now(UTC),
        )
        key_id, secret, digest = new_secret()
        key = ApiKey(
            key_id=key_id,
            source_id=source_id,
            scopes=tuple(dict.fromkeys(scopes or DEFAULT_SCOPES)),
            rate_limit_per_second=rate_limit_per_second,
            burst=burst,
            label=label,
            created_by=created_by,
            expires_at=expires_at,
            secret_sha256=digest,
        )
        async with self._pool.acquire() as conn:
            return await repository.insert_key(conn, key), secret

    async def get(self, key_id: str) -> ApiKey:
        if not KEY_ID.fullmatch(key_id):
            raise NotFound("no such API key")
        async with self._pool.acquire() as conn:
            key = await repository.get_key(conn, key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}")
        return key

    async def list(
        self, source_id: str, include_revoked: bool, before: tuple[datetime, str] | None, limit: int
    ) -> list[ApiKey]:
        async with self._pool.acquire() as conn:
            return await repository.list_keys(
                conn,
                source_id=source_id,
                include_revoked=include_revoked,
                now=datetime.now(UTC),
                before=before,
                limit=limit,
            )

    async def update(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise InvalidArgument(
                "update_mask names fields that cannot be changed",
                [
                    FieldViolation("update_mask", f"cannot change {name!r}", "NOT_UPDATABLE")
                    for name in unknown
                ],
            )
        check_key_fields(
            scopes=changes.get("scopes"),
            rate_limit_per_second=changes.get("rate_limit_per_second"),
            burst=changes.get("burst"),
            label=changes.get("label"),
            expires_at=changes.get("expires_at"),
            now=datetime.now(UTC),
            prefix="key.",
        )
        if "scopes" in changes:
            changes["scopes"] = tuple(dict.fromkeys(changes["scopes"] or DEFAULT_SCOPES))
        if not KEY_ID.fullmatch(key_id):
            raise NotFound("no such API key")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await repository.get_key(conn, key_id)
            if current is None:
                raise NotFound(f"no API key {key_id}")
            if current.revoked_at is not None:
                raise FailedPrecondition(f"API key {key_id} is revoked")
            updated = await repository.update_key(conn, key_id, changes)
        self._registry.forget(key_id)
        assert updated is not None
        return updated

    async def revoke(self, key_id: str) -> ApiKey:
        if not KEY_ID.fullmatch(key_id):
            raise NotFound("no such API key")
        async with self._pool.acquire() as conn:
            key = await repository.revoke_key(conn, key_id, datetime.now(UTC))
        if key is None:
            raise NotFound(f"no API key {key_id}")
        self._registry.forget(key_id)
        return key
