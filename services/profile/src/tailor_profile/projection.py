"""The real-time projection: customer events in, profiles, identities, merges and change
events out, one transaction per fetched batch.

Identity resolution: every id an event names is looked up; an identify naming both an
anonymous id and a user id, and an alias, join two profiles — the one the user id (the
newer id) resolves to survives, the other is folded into it, its ids are repointed and a
``ProfilesMerged`` is published so that consent follows. Batches that may merge take the
projection lock exclusively (merges touch rows of other partitions); all others share it,
so partitions run in parallel and a merge never interleaves with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2

from tailor.events.v1 import events_pb2, platform_events_pb2
from tailor_core.db import Connection
from tailor_core.envelopes import envelope, outbound, timestamp
from tailor_core.outbox import OutboundMessage, enqueue
from tailor_core.privacy import erased, hold_off_erasure
from tailor_core.streams import Naming
from tailor_profile.adapters import repository as repo
from tailor_profile.adapters.repository import StoredProfile, Tables
from tailor_profile.domain.catalogue import is_personal
from tailor_profile.domain.state import (
    Projector,
    TraitWrite,
    merge_states,
    new_state,
)
from tailor_profile.domain.view import computed_view, flatten, next_window_change

#: Advisory lock (per schema) shared by ordinary batches and taken alone by merges, manual
#: merges and the rebuild's swap.
PROJECTION_LOCK = 0x7A1


def _lock_key(schema: str) -> int:
    return (hash_text(schema) << 16) | PROJECTION_LOCK


def hash_text(text: str) -> int:
    """Stable 31-bit hash (Python's hash() changes per process)."""
    value = 0
    for char in text.encode():
        value = (value * 131 + char) % 2_147_483_629
    return value % 32_768


async def lock_projection(conn: Connection, schema: str, exclusive: bool) -> None:
    key = _lock_key(schema)
    if exclusive:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
    else:
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", key)


def may_merge(event: events_pb2.CustomerEvent) -> bool:
    kind = event.WhichOneof("kind")
    return kind == "alias" or (kind == "identify" and bool(event.user_id and event.anonymous_id))


def search_values(profile: StoredProfile, now: datetime, currency: str) -> dict[str, Any]:
    """The flat non-personal trait map FindProfiles and change events use."""
    state = profile.state
    flat = flatten(computed_view(state, now, currency, profile.rfm))
    flat.update({name: entry["v"] for name, entry in state["traits"].items() if entry["s"] is None})
    flat["first_seen"] = state["first_seen"]
    flat["last_seen"] = state["last_seen"]
    return flat


@dataclass
class _Touched:
    profile: StoredProfile
    before: dict[str, Any]
    cause_event_id: str = ""
    personal_changed: set[str] = field(default_factory=set)


class ProfileProjection:
    """Applies batches of EVENTS envelopes to the projection tables ``tables``.

    With ``publish`` (the live projection) changes and merges go out through the outbox;
    a rebuild replays without publishing, since every change was announced once already.
    """

    def __init__(
        self,
        *,
        naming: Naming,
        schema: str,
        currency: str,
        tables: Tables = repo.LIVE,
        publish: bool = True,
    ) -> None:
        self._naming = naming
        self._schema = schema
        self._currency = currency
        self._projector = Projector(currency)
        self.tables = tables
        self._publish = publish

    async def apply(
        self,
        conn: Connection,
        messages: Sequence[tuple[str, events_pb2.Envelope]],
        *,
        now: datetime | None = None,
        lock: bool = True,
    ) -> int:
        """Apply ``(event_id, envelope)`` pairs in order; return how many were new."""
        now = now or datetime.now(UTC)
        customer = [(eid, env) for eid, env in messages if env.HasField("customer_event")]
        # Erasure's lock first, then the projection's: the order an erasure takes them in.
        await hold_off_erasure(conn)
        if lock:
            exclusive = any(may_merge(env.customer_event) for _, env in customer)
            await lock_projection(conn, self._schema, exclusive)
        gone = await erased(conn, {i for _, env in customer for i in _ids(env.customer_event)})
        if gone:  # in flight while the person was erased: writing it would bring them back
            customer = [
                (eid, env) for eid, env in customer if not set(_ids(env.customer_event)) & gone
            ]
        t = self.tables
        new_ids = await repo.claim_events(
            conn,
            t,
            [
                (eid, env.customer_event.user_id or env.customer_event.anonymous_id)
                for eid, env in customer
            ],
        )
        fresh = [(eid, env) for eid, env in customer if eid in new_ids]
        if not fresh:
            return 0
        batch = _Batch(self, conn, now)
        ids = {i for _, env in fresh for i in _ids(env.customer_event)}
        batch.resolved.update(await repo.resolve(conn, t, ids))
        await batch.load(set(batch.resolved.values()))
        for event_id, env in fresh:
            await batch.apply(event_id, env)
        await batch.finish()
        return len(fresh)

    async def merge_by_hand(
        self,
        conn: Connection,
        survivor_id: str,
        merged_ids: Sequence[str],
        *,
        merged_by: str,
        note: str,
        now: datetime | None = None,
    ) -> tuple[StoredProfile, list[dict[str, Any]]]:
        """Merge profiles on an operator's word (MergeProfiles); returns the survivor and the
        merges recorded. The caller holds no lock: this takes the projection lock alone."""
        now = now or datetime.now(UTC)
        await lock_projection(conn, self._schema, exclusive=True)
        batch = _Batch(self, conn, now)
        batch.resolved.update(await repo.resolve(conn, self.tables, [survivor_id, *merged_ids]))
        await batch.load(set(batch.resolved.values()))
        target = batch.resolved[survivor_id]
        recorded = []
        for merged_id in merged_ids:
            source = batch.resolved[merged_id]
            if source == target:
                continue
            await batch.merge(target, source, "manual", "", merged_by=merged_by, note=note)
            recorded.append({"surviving": target, "merged": source, "merged_at": now})
        await batch.finish()
        return batch.profiles[target].profile, recorded


def _ids(event: events_pb2.CustomerEvent) -> list[str]:
    ids = [i for i in (event.user_id, event.anonymous_id) if i]
    if event.WhichOneof("kind") == "alias" and event.alias.previous_id:
        ids.append(event.alias.previous_id)
    return ids


class _Batch:
    """The profiles one batch touches, kept in memory until the batch is written."""

    def __init__(self, projection: ProfileProjection, conn: Connection, now: datetime) -> None:
        self.p = projection
        self.conn = conn
        self.now = now
        self.resolved: dict[str, str] = {}
        self.new_links: dict[str, str] = {}
        self.profiles: dict[str, _Touched] = {}
        self.history: list[tuple[str, TraitWrite]] = []
        self.messages: list[OutboundMessage] = []
        self.deleted: set[str] = set()

    async def load(self, profile_ids: set[str]) -> None:
        missing = profile_ids - set(self.profiles) - self.deleted
        for pid, stored in (await repo.lock_profiles(self.conn, self.p.tables, missing)).items():
            # What was last saved (and announced) is what a change is measured against.
            self.profiles[pid] = _Touched(stored, dict(stored.search))

    async def profile(self, profile_id: str) -> _Touched:
        if profile_id not in self.profiles:
            await self.load({profile_id})
        if profile_id not in self.profiles:
            stored = StoredProfile(profile_id, 0, new_state(), {}, None, None, [], exists=False)
            self.profiles[profile_id] = _Touched(stored, {})
        return self.profiles[profile_id]

    def _link(self, subject_id: str, profile_id: str) -> None:
        if self.resolved.get(subject_id) != profile_id:
            self.resolved[subject_id] = profile_id
            self.new_links[subject_id] = profile_id

    async def apply(self, event_id: str, env: events_pb2.Envelope) -> None:
        event = env.customer_event
        primary = event.user_id or event.anonymous_id
        if not primary:
            return
        target = self.resolved.get(primary, primary)
        self._link(primary, target)
        kind = event.WhichOneof("kind")
        others = []
        if kind == "identify" and event.user_id and event.anonymous_id:
            others = [(event.anonymous_id, "identify")]
        elif kind == "alias" and event.alias.previous_id:
            others = [(event.alias.previous_id, "alias")]
        elif event.user_id and event.anonymous_id and event.anonymous_id not in self.resolved:
            self._link(event.anonymous_id, target)  # a first sighting joins, never merges
        for other_id, reason in others:
            source = self.resolved.get(other_id)
            if source is None:
                self._link(other_id, target)
            elif source != target:
                await self.merge(target, source, reason, event_id)
        touched = await self.profile(target)
        applied = self.p._projector.apply(touched.profile.state, event, event_id, self.now)
        touched.cause_event_id = event_id
        self._record_writes(target, touched, applied.trait_writes)

    def _record_writes(self, pid: str, touched: _Touched, writes: list[TraitWrite]) -> None:
        for write in writes:
            if write.repeat:
                continue
            self.history.append((pid, write))
            if write.won and write.entry["s"] is not None:
                touched.personal_changed.add(write.name)

    async def merge(
        self,
        survivor: str,
        merged: str,
        reason: str,
        cause_event_id: str,
        *,
        merged_by: str = "",
        note: str = "",
    ) -> None:
        target = await self.profile(survivor)
        source = await self.profile(merged)
        writes = merge_states(target.profile.state, source.profile.state, self.now)
        target.profile.version = max(target.profile.version, source.profile.version)
        losers = [w for w in writes if not w.won and not w.repeat]
        target.personal_changed |= {w.name for w in writes if w.won and w.entry["s"]}
        target.personal_changed |= source.personal_changed
        t = self.p.tables
        # History rows written earlier in this batch for the merged profile move with it.
        self.history = [(survivor if pid == merged else pid, w) for pid, w in self.history]
        await repo.repoint(self.conn, t, merged, survivor)
        await repo.mark_lost(self.conn, t, survivor, losers)
        for subject_id, pid in list(self.resolved.items()):
            if pid == merged:
                self.resolved[subject_id] = survivor
        self.new_links = {s: (survivor if p == merged else p) for s, p in self.new_links.items()}
        self._link(merged, survivor)
        if source.profile.exists:
            await repo.delete_profile(self.conn, t, merged)
        del self.profiles[merged]
        self.deleted.add(merged)
        await repo.record_merge(
            self.conn,
            t,
            survivor=survivor,
            merged=merged,
            reason=reason,
            cause_event_id=cause_event_id,
            merged_at=self.now,
            merged_by=merged_by,
            note=note,
        )
        if self.p._publish:
            payload = platform_events_pb2.ProfilesMerged(
                surviving_profile_id=survivor,
                merged_profile_ids=[merged],
                reason=reason,
                cause_event_id=cause_event_id,
                merged_at=timestamp(self.now),
            )
            message = envelope(
                source="tailor://profile",
                event_type="tailor.profile.v1.merged",
                subject=survivor,
                payload_field="profiles_merged",
                payload=payload,
                time=self.now,
                event_id=f"merge:{merged}:{survivor}:{cause_event_id or self.now.isoformat()}",
            )
            message.causation_id = cause_event_id
            self.messages.append(
                outbound(message, self.p._naming.profile_subject(survivor, "merged"))
            )

    async def finish(self) -> None:
        t, now = self.p.tables, self.now
        window_changes = {}
        saved = []
        for pid, touched in self.profiles.items():
            profile = touched.profile
            after = search_values(profile, now, self.p._currency)
            changed = sorted(
                {
                    k
                    for k in after.keys() | touched.before.keys()
                    if after.get(k) != touched.before.get(k)
                }
                | touched.personal_changed
            )
            if not changed and profile.exists:
                continue
            profile.version += 1
            profile.search = after
            window_changes[pid] = next_window_change(profile.state, now)
            saved.append(profile)
            if self.p._publish:
                self.messages.append(self._changed(profile, touched, changed, after))
        await repo.link(self.conn, t, self.new_links)
        await repo.save_profiles(self.conn, t, saved, window_changes)
        await repo.add_history(self.conn, t, self.history)
        if self.messages:
            await enqueue(self.conn, self.messages)

    def _changed(
        self, profile: StoredProfile, touched: _Touched, changed: list[str], after: dict[str, Any]
    ) -> OutboundMessage:
        return changed_message(
            self.p._naming,
            profile,
            changed,
            after,
            cause_event_id=touched.cause_event_id,
            created=not profile.exists,
            now=self.now,
        )


def changed_message(
    naming: Naming,
    profile: StoredProfile,
    changed: list[str],
    after: dict[str, Any],
    *,
    cause_event_id: str,
    created: bool,
    now: datetime,
) -> OutboundMessage:
    """The ProfileChanged envelope for a profile's new version."""
    values = struct_pb2.Struct()
    values.update({name: after.get(name) for name in changed if not is_personal(name)})
    payload = platform_events_pb2.ProfileChanged(
        profile_id=profile.profile_id,
        changed_traits=changed,
        cause_event_id=cause_event_id,
        version=profile.version,
        changed_at=timestamp(now),
        created=created,
        non_personal_values=values,
    )
    message = envelope(
        source="tailor://profile",
        event_type="tailor.profile.v1.changed",
        subject=profile.profile_id,
        payload_field="profile_changed",
        payload=payload,
        time=now,
    )
    message.causation_id = cause_event_id
    return outbound(message, naming.profile_subject(profile.profile_id, "changed"))
