"""Consent-gated profile reads: the purpose decides what the caller may see.

Without the subject's current consent for the purpose a read fails (PERMISSION_DENIED,
reason CONSENT_REQUIRED), unless the caller asked for the non-personal part only. Personal
traits are opened with a key the consent service grants for that purpose; nothing personal
leaves this module otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tailor.common.v1.common_pb2 import EncryptedField
from tailor_core.consent_client import ConsentAnswer, ConsentClient
from tailor_core.crypto import DecryptionError, decrypt_field
from tailor_core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tailor_profile.adapters import repository as repo
from tailor_profile.adapters.keys import DecryptionKeys
from tailor_profile.adapters.repository import StoredProfile
from tailor_profile.domain.catalogue import TraitSource, definition_of
from tailor_profile.domain.state import parse_iso
from tailor_profile.domain.view import computed_view


@dataclass(frozen=True, slots=True)
class TraitValue:
    name: str
    value: Any
    source: int
    updated_at: datetime
    stale: bool
    imputed: bool
    personal: bool
    source_id: str = ""
    cause_event_id: str = ""


@dataclass(slots=True)
class ProfileRecord:
    profile_id: str
    version: int
    first_seen: datetime | None
    last_seen: datetime | None
    computed: dict[str, Any]
    traits: list[TraitValue] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    personal_omitted: bool = False


def check_purpose(purpose: str, path: str = "purpose") -> None:
    if not purpose:
        raise InvalidArgument(
            "purpose is required", [FieldViolation(path, "name the purpose", "REQUIRED")]
        )


def check_trait_names(names: Sequence[str]) -> None:
    for index, name in enumerate(names):
        if not (name.endswith(".") or definition_of(name) is not None):
            raise InvalidArgument(
                f"unknown trait {name!r}",
                [FieldViolation(f"trait_names[{index}]", "not a trait or prefix", "UNKNOWN_TRAIT")],
            )


def consent_denied(purpose: str) -> PermissionDenied:
    return PermissionDenied(
        f"the subject has no current consent for {purpose}",
        reason="CONSENT_REQUIRED",
        metadata={"purpose": purpose},
    )


def judge(answer: ConsentAnswer, purpose: str) -> bool:
    """Allowed? Raises for an unknown purpose (INVALID_ARGUMENT) or no consent service."""
    if answer.allowed:
        return True
    if answer.reason == "invalid_request":
        raise InvalidArgument(
            f"unknown purpose {purpose!r}",
            [FieldViolation("purpose", "not a registered purpose", "UNKNOWN_PURPOSE")],
        )
    if answer.reason == "consent_unavailable":
        raise Unavailable("consent cannot be checked now; retry")
    return False


class ProfileReader:
    def __init__(
        self,
        pool: asyncpg.Pool,
        consent: ConsentClient,
        keys: DecryptionKeys,
        currency: str,
    ) -> None:
        self._pool = pool
        self._consent = consent
        self._keys = keys
        self._currency = currency

    async def resolve(self, subject_ids: Sequence[str]) -> dict[str, str]:
        async with self._pool.acquire() as conn:
            return await repo.resolve(conn, repo.LIVE, subject_ids)

    async def get(
        self, subject_id: str, purpose: str, *, non_personal_only: bool, trait_names: Sequence[str]
    ) -> ProfileRecord:
        check_purpose(purpose)
        check_trait_names(trait_names)
        records = await self.get_many(
            [subject_id], purpose, non_personal_only=non_personal_only, trait_names=trait_names
        )
        if records.missing:
            raise NotFound("no profile for this subject id")
        if records.denied:
            raise consent_denied(purpose)
        return records.profiles[0]

    async def get_many(
        self,
        subject_ids: Sequence[str],
        purpose: str,
        *,
        non_personal_only: bool,
        trait_names: Sequence[str],
    ) -> BatchResult:
        resolved = await self.resolve(subject_ids)
        profile_ids = list(dict.fromkeys(resolved[s] for s in subject_ids if s in resolved))
        answers = await self._consent.check_many((pid, purpose) for pid in profile_ids)
        allowed = {pid for pid in profile_ids if judge(answers[(pid, purpose)], purpose)}
        async with self._pool.acquire() as conn:
            stored = await repo.get_profiles(conn, profile_ids)
            identities = await repo.identities_of_many(conn, sorted(allowed))
        result = BatchResult()
        seen: set[str] = set()
        for subject_id in subject_ids:
            pid = resolved.get(subject_id)
            if pid is None or pid not in stored:
                result.missing.append(subject_id)
                continue
            if pid not in allowed and not non_personal_only:
                result.denied.append(subject_id)
                continue
            if pid in seen:
                continue
            seen.add(pid)
            personal = pid in allowed and not non_personal_only
            record = self.record(stored[pid], trait_names, personal=personal)
            if personal:
                record.identities = identities.get(pid, [])
                await self._open_personal(record, stored[pid], purpose)
            result.profiles.append(record)
        return result

    def record(
        self, stored: StoredProfile, trait_names: Sequence[str], *, personal: bool
    ) -> ProfileRecord:
        """The profile without personal values (those are opened by :meth:`_open_personal`)."""
        now = datetime.now(UTC)
        state = stored.state
        record = ProfileRecord(
            profile_id=stored.profile_id,
            version=stored.version,
            first_seen=parse_iso(state["first_seen"]) if state["first_seen"] else None,
            last_seen=parse_iso(state["last_seen"]) if state["last_seen"] else None,
            computed=computed_view(state, now, self._currency, stored.rfm),
            personal_omitted=not personal,
        )
        wanted = _selector(trait_names)
        for name, entry in sorted(state["traits"].items()):
            if not wanted(name) or (entry["s"] is not None and not personal):
                continue
            record.traits.append(_trait(name, entry, now))
        for name, value in sorted((stored.imputed or {}).items()):
            if wanted(name) and name not in state["traits"]:
                record.traits.append(
                    TraitValue(
                        name,
                        value["value"],
                        int(TraitSource.IMPUTED),
                        parse_iso(value["at"]),
                        False,
                        True,
                        False,
                    )
                )
        return record

    async def _open_personal(
        self, record: ProfileRecord, stored: StoredProfile, purpose: str
    ) -> None:
        opened = []
        for trait in record.traits:
            if not trait.personal:
                opened.append(trait)
                continue
            entry = stored.state["traits"][trait.name]
            value = await self.open_value(entry["s"], entry["k"], purpose)
            if value is not None:
                opened.append(_replace_value(trait, value))
        record.traits = opened

    async def open_value(self, sealed_text: str, key_subject: str, purpose: str) -> str | None:
        """A sealed value in plain text; None when its key is gone (erased)."""
        sealed = EncryptedField()
        sealed.ParseFromString(base64.b64decode(sealed_text))
        key = await self._keys.key(key_subject, purpose, sealed.key_id)
        if key is None:
            return None
        try:
            return decrypt_field(key, sealed)
        except DecryptionError:
            return None


@dataclass(slots=True)
class BatchResult:
    profiles: list[ProfileRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)


def _selector(names: Sequence[str]) -> Any:
    if not names:
        return lambda name: True
    exact = {n for n in names if not n.endswith(".")}
    prefixes = tuple(n for n in names if n.endswith("."))
    return lambda name: name in exact or (bool(prefixes) and name.startswith(prefixes))


def _trait(name: str, entry: dict[str, Any], now: datetime) -> TraitValue:
    definition = definition_of(name)
    updated_at = parse_iso(entry["at"])
    stale = bool(
        definition and definition.stale_after and now - updated_at > definition.stale_after
    )
    return TraitValue(
        name=name,
        value=entry["v"],
        source=entry["src"],
        updated_at=updated_at,
        stale=stale,
        imputed=False,
        personal=entry["s"] is not None,
        source_id=entry["sid"] or "",
        cause_event_id=entry["ev"],
    )


def _replace_value(trait: TraitValue, value: Any) -> TraitValue:
    return TraitValue(
        trait.name,
        value,
        trait.source,
        trait.updated_at,
        trait.stale,
        trait.imputed,
        trait.personal,
        trait.source_id,
        trait.cause_event_id,
    )
