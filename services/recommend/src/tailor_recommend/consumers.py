"""The recommend service's durable consumers: interactions from EVENTS, segment members
from SEGMENT, merged ids from PROFILE — each through the inbox, so a redelivered message
changes nothing, and nothing is written about a subject erased meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC as _UTC
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from tailor_core.bus import ConsumerSpec
from tailor_core.db import Connection
from tailor_core.envelopes import parse
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.privacy import erased, hold_off_erasure
from tailor_core.streams import Naming, Stream
from tailor_recommend.adapters import store
from tailor_recommend.intake import touches


async def apply_events(conn: Connection, messages: Sequence[InboundMessage]) -> None:
    """EVENTS → interactions and item descriptions."""
    await hold_off_erasure(conn)
    found = []
    for message in messages:
        envelope = parse(message.data)
        if not envelope.HasField("customer_event"):
            continue
        event = envelope.customer_event
        primary = event.user_id or event.anonymous_id
        if not primary:
            continue
        for touch in touches(event):
            found.append((message.event_id, primary, event, touch))
    if not found:
        return
    resolved = await store.resolve(conn, {primary for _, primary, _, _ in found})
    gone = await erased(conn, set(resolved) | set(resolved.values()))
    rows = []
    items = {}
    for event_id, primary, event, touch in found:
        subject = resolved[primary]
        if primary in gone or subject in gone:
            continue
        rows.append(
            (
                event_id,
                subject,
                touch.item_id,
                str(touch.kind),
                event.timestamp.ToDatetime(tzinfo=_UTC),
                event.context.location.country,
                event.context.device_type,
            )
        )
        items[touch.item_id] = (touch.item_id, touch.category, touch.name)
    await store.describe_items(conn, sorted(items.values()))
    await store.add_interactions(conn, rows)


async def apply_memberships(conn: Connection, messages: Sequence[InboundMessage]) -> None:
    """SEGMENT → current members (entered / exited)."""
    await hold_off_erasure(conn)
    for message in messages:
        envelope = parse(message.data)
        if envelope.HasField("segment_entered"):
            change: Any = envelope.segment_entered
            if await erased(conn, {change.subject_id}):
                continue
            await conn.execute(
                "INSERT INTO segment_members (segment_id, subject_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                change.segment_id,
                change.subject_id,
            )
        elif envelope.HasField("segment_exited"):
            change = envelope.segment_exited
            await conn.execute(
                "DELETE FROM segment_members WHERE segment_id = $1 AND subject_id = $2",
                change.segment_id,
                change.subject_id,
            )


async def apply_merges(conn: Connection, messages: Sequence[InboundMessage]) -> None:
    """PROFILE merges → a merged id's interactions belong to the surviving profile."""
    await hold_off_erasure(conn)
    for message in messages:
        envelope = parse(message.data)
        if not envelope.HasField("profiles_merged"):
            continue
        merge = envelope.profiles_merged
        survivor = merge.surviving_profile_id
        if await erased(conn, {survivor, *merge.merged_profile_ids}):
            continue
        for merged in merge.merged_profile_ids:
            await conn.execute(
                "UPDATE interactions SET subject_id = $2 WHERE subject_id = $1", merged, survivor
            )
            await conn.execute(
                "UPDATE identities SET profile_id = $2 WHERE profile_id = $1", merged, survivor
            )
            await conn.execute(
                "INSERT INTO identities (subject_id, profile_id) VALUES ($1, $2) "
                "ON CONFLICT (subject_id) DO UPDATE SET profile_id = excluded.profile_id",
                merged,
                survivor,
            )


def recommend_consumers(
    *, pool: asyncpg.Pool, js: JetStreamContext, naming: Naming, batch: int
) -> list[InboxConsumer]:
    specs = (
        (Stream.EVENTS, "recommend_events", "interactions from customer events", apply_events),
        (Stream.SEGMENT, "recommend_segment", "segment members", apply_memberships),
        (Stream.PROFILE, "recommend_profile", "merged profiles", apply_merges),
    )
    return [
        InboxConsumer(
            pool=pool,
            js=js,
            spec=ConsumerSpec(
                stream=naming.stream_name(stream),
                durable=durable,
                filter_subject=naming.all_subjects(stream),
                description=f"recommend: {description}",
                max_ack_pending=batch * 4,
            ),
            batch_handler=handler,
            dead_letter_subject=naming.dead_letter_subject("recommend", durable),
            batch_size=batch,
            fetch_timeout_seconds=0.5,
        )
        for stream, durable, description, handler in specs
    ]
