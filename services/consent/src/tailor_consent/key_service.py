"""Subject data keys: created on first use, handed out only for consented purposes, audited.

Encryption keys go to any service holding ``keys:encrypt`` (ingest must protect personal
fields whether or not they may later be used). A decryption key is handed out only when the
calling service is registered for the stated purpose and the subject's consent for it is
current; every grant and every refusal is written to the audit log.
"""

from __future__ import annotations

import uuid

import asyncpg

from tailor_consent.adapters import audit, keys
from tailor_consent.domain.ledger import raise_if, validate_subject
from tailor_consent.ledger_service import ConsentLedger
from tailor_core.auth import Principal
from tailor_core.crypto import DataKey, DecryptionError, new_data_key, unwrap_key, wrap_key
from tailor_core.errors import FailedPrecondition, FieldViolation, NotFound, PermissionDenied

REWRAP_BATCH = 500
KEY_CACHE_TTL_SECONDS = 300


class KeyService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: ConsentLedger,
        master_keys: dict[str, bytes],
        current_master: str,
    ) -> None:
        if current_master not in master_keys:
            raise ValueError(f"master key {current_master!r} is not among the configured keys")
        self._pool = pool
        self._ledger = ledger
        self._masters = master_keys
        self._current = current_master

    @property
    def current_master_key_id(self) -> str:
        return self._current

    def _open(self, stored: keys.StoredKey) -> DataKey:
        if stored.wrapped is None:
            raise FailedPrecondition("the subject was erased; its key no longer exists")
        master = self._masters.get(stored.master_key_id)
        if master is None:
            raise FailedPrecondition(f"master key {stored.master_key_id!r} is not loaded")
        try:
            return unwrap_key(master, stored.key_id, stored.wrapped)
        except DecryptionError:
            raise FailedPrecondition("a data key does not open with its master key") from None

    async def encryption_key(self, subject_id: str, caller: Principal) -> DataKey:
        raise_if(validate_subject(subject_id))
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await keys.get(conn, subject_id)
            if stored is None:
                fresh = new_data_key(f"k_{uuid.uuid4().hex}")
                stored = await keys.insert_if_absent(
                    conn,
                    keys.StoredKey(
                        subject_id,
                        fresh.key_id,
                        wrap_key(self._masters[self._current], fresh),
                        self._current,
                    ),
                )
            key = self._open(stored)
            await audit.append(
                conn,
                "key_granted",
                caller.id,
                subject_id=subject_id,
                details={"use": "encrypt", "key_id": key.key_id},
            )
        return key

    async def decryption_key(
        self, subject_id: str, purpose: str, key_id: str, caller: Principal
    ) -> DataKey:
        violations = validate_subject(subject_id)
        registry = await self._ledger.purposes()
        if purpose not in registry:
            violations.append(FieldViolation("purpose", "unknown purpose", "UNKNOWN_PURPOSE"))
        raise_if(violations)
        definition = registry[purpose]
        refusal = ""
        if not definition.always_allowed and caller.id not in definition.allowed_services:
            refusal = f"service {caller.id} is not registered for purpose {purpose}"
        elif not (await self._ledger.check(subject_id, purpose)).allowed:
            refusal = f"no current consent for {purpose}"
        async with self._pool.acquire() as conn, conn.transaction():
            if refusal:
                await audit.append(
                    conn,
                    "key_refused",
                    caller.id,
                    subject_id=subject_id,
                    purpose=purpose,
                    details={"reason": refusal},
                )
            else:
                stored = await keys.get(conn, subject_id)
                if stored is None or (key_id and stored.key_id != key_id):
                    raise NotFound("no data key for this subject")
                key = self._open(stored)
                await audit.append(
                    conn,
                    "key_granted",
                    caller.id,
                    subject_id=subject_id,
                    purpose=purpose,
                    details={"use": "decrypt", "key_id": key.key_id},
                )
        if refusal:
            raise PermissionDenied(refusal)
        return key

    async def rotate(self, new_master_key_id: str, caller: Principal) -> int:
        """Re-wrap every data key under ``new_master_key_id``, in batches, while serving."""
        if new_master_key_id not in self._masters:
            raise FailedPrecondition(
                f"master key {new_master_key_id!r} is not loaded; list it in TAILOR_MASTER_KEYS"
            )
        self._current = new_master_key_id  # new keys are wrapped under it from now on
        rewrapped = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                batch = await keys.wrapped_under_other_masters(
                    conn, new_master_key_id, REWRAP_BATCH
                )
                for stored in batch:
                    key = self._open(stored)
                    await keys.rewrap(
                        conn,
                        stored.subject_id,
                        wrap_key(self._masters[new_master_key_id], key),
                        new_master_key_id,
                    )
            rewrapped += len(batch)
            if len(batch) < REWRAP_BATCH:
                break
        async with self._pool.acquire() as conn, conn.transaction():
            await audit.append(
                conn,
                "master_key_rotated",
                caller.id,
                details={"master_key_id": new_master_key_id, "rewrapped": rewrapped},
            )
        return rewrapped
