"""NATS JetStream: connecting, and idempotent provisioning of streams and durable consumers.

Provisioning is declarative: a service states the streams and consumers it needs and
:func:`provision_streams` / :func:`provision_consumer` create what is missing, update what
differs, and leave the rest untouched, so every replica may run it at every start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from tailor_core.streams import Naming, Stream

DAY = 24 * 3600.0


class Provisioned(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a stream must look like. Only the fields listed here are managed."""

    name: str
    subjects: tuple[str, ...]
    max_age_seconds: float = 0.0  # 0 = keep forever (the event log is the source of truth)
    duplicate_window_seconds: float = 120.0
    replicas: int = 1
    max_msg_bytes: int = 1024 * 1024
    description: str = ""

    def to_config(self) -> js_api.StreamConfig:
        return js_api.StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=self.replicas,
            max_msg_size=self.max_msg_bytes,
            discard=js_api.DiscardPolicy.OLD,
        )


_STREAM_DESCRIPTIONS = {
    Stream.EVENTS: "accepted customer events",
    Stream.REJECTED: "events that failed validation, with reasons",
    Stream.PROFILE: "profile changes and merges",
    Stream.SEGMENT: "segment membership changes",
    Stream.CONSENT: "consent decisions",
    Stream.PRIVACY: "data-subject request workflow steps",
    Stream.DEADLETTER: "messages a consumer gave up on, with the error",
}

# Streams whose messages are not the source of truth are bounded in age.
_MAX_AGE = {Stream.REJECTED: 30 * DAY, Stream.DEADLETTER: 30 * DAY}


def platform_streams(naming: Naming, replicas: int = 1) -> list[StreamSpec]:
    """The streams of ARCHITECTURE.md §3 for one namespace."""
    return [
        StreamSpec(
            name=naming.stream_name(stream),
            subjects=(naming.all_subjects(stream),),
            max_age_seconds=_MAX_AGE.get(stream, 0.0),
            replicas=replicas,
            description=_STREAM_DESCRIPTIONS[stream],
        )
        for stream in Stream
    ]


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer with explicit acks."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 5
    ack_wait_seconds: float = 30.0
    max_ack_pending: int = 1000
    description: str = ""
    deliver_from_start: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_config(self) -> js_api.ConsumerConfig:
        return js_api.ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=(
                js_api.DeliverPolicy.ALL if self.deliver_from_start else js_api.DeliverPolicy.NEW
            ),
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_seconds,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subject=self.filter_subject,
            **self.extra,
        )


async def connect(url: str, name: str) -> NatsClient:
    """Connect to NATS, retrying for a while on start and reconnecting forever afterwards."""
    return await nats.connect(
        servers=[server.strip() for server in url.split(",") if server.strip()],
        name=name,
        connect_timeout=5,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
    )


def _differs(wanted: dict[str, Any], current: dict[str, Any]) -> bool:
    return any(current.get(key) != value for key, value in wanted.items())


async def provision_streams(
    js: JetStreamContext, specs: Iterable[StreamSpec]
) -> dict[str, Provisioned]:
    """Create or update each stream so it matches its spec; report what was done."""
    done: dict[str, Provisioned] = {}
    for spec in specs:
        wanted = spec.to_config()
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(wanted)
            done[spec.name] = Provisioned.CREATED
            continue
        wanted_fields = {k: v for k, v in wanted.as_dict().items() if v is not None}
        if _differs(wanted_fields, info.config.as_dict()):
            await js.update_stream(wanted)
            done[spec.name] = Provisioned.UPDATED
        else:
            done[spec.name] = Provisioned.UNCHANGED
    return done


async def provision_consumer(js: JetStreamContext, spec: ConsumerSpec) -> Provisioned:
    """Create the durable consumer, or update it when its managed settings changed."""
    wanted = spec.to_config()
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, wanted)
        return Provisioned.CREATED
    wanted_fields = {
        k: v
        for k, v in wanted.as_dict().items()
        if v is not None and k not in ("deliver_policy",)  # fixed at creation
    }
    if _differs(wanted_fields, info.config.as_dict()):
        await js.add_consumer(spec.stream, wanted)  # same durable name: an update
        return Provisioned.UPDATED
    return Provisioned.UNCHANGED


async def delete_streams(js: JetStreamContext, names: Sequence[str]) -> None:
    """Delete streams that exist among ``names`` (tests and ``tailor down --purge``)."""
    for name in names:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)


async def publish_each(
    js: JetStreamContext,
    messages: Sequence[tuple[str, bytes, dict[str, str]]],
    timeout: float = 5.0,
) -> list[BaseException | None]:
    """Publish ``(subject, payload, headers)`` messages in order and wait for JetStream's
    answer to each: None where stored, the error (or TimeoutError) where not.

    Uses nats-py's asynchronous publishing: one write per message and one wait for all the
    acknowledgements, instead of a request/response round trip per message.
    """
    futures = [
        await js.publish_async(subject, payload, headers=headers)
        for subject, payload, headers in messages
    ]
    if not futures:
        return []
    _, pending = await asyncio.wait(futures, timeout=timeout)
    for future in pending:
        future.cancel()
    return [
        TimeoutError("publish not acknowledged in time")
        if future in pending
        else future.exception()
        for future in futures
    ]


async def publish_acked(
    js: JetStreamContext,
    messages: Sequence[tuple[str, bytes, dict[str, str]]],
    timeout: float = 5.0,
) -> None:
    """Like :func:`publish_each`, raising the first failure."""
    for failure in await publish_each(js, messages, timeout):
        if failure is not None:
            raise failure
