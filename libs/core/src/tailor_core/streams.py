"""Stream names, subjects, subject tokens and partitions (ARCHITECTURE.md §3).

Everything that builds a NATS subject goes through :class:`Naming`, so a namespace (one per
test, or per environment sharing a NATS cluster) isolates streams and subjects alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class Stream(StrEnum):
    """The platform's streams; the value is the stream name before the namespace prefix."""

    EVENTS = "EVENTS"
    REJECTED = "REJECTED"
    PROFILE = "PROFILE"
    SEGMENT = "SEGMENT"
    CONSENT = "CONSENT"
    PRIVACY = "PRIVACY"
    DEADLETTER = "DEADLETTER"

    @property
    def root(self) -> str:
        """First subject token of the stream (``events`` for EVENTS)."""
        return self.value.lower()


_TOKEN_PERSON = b"tailor-subject"
_UNSAFE = re.compile(r"[^a-z0-9_\-]+")


@lru_cache(maxsize=65536)  # a busy service hashes the same subjects many times per event
def _digest(subject_id: str) -> bytes:
    return hashlib.blake2b(subject_id.encode(), digest_size=16, person=_TOKEN_PERSON).digest()


def subject_token(subject_id: str) -> str:
    """One-way, stable token for a subject id, safe as a NATS subject token.

    Raw ids never appear in subjects, because subjects show in monitoring and server logs.
    """
    if not subject_id:
        raise ValueError("subject id must not be empty")
    return _digest(subject_id).hex()


def partition_of(subject_id: str, partitions: int) -> int:
    """Stable partition (0..partitions-1) of a subject id, equal across processes and hosts."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return int.from_bytes(_digest(subject_id)[:4], "big") % partitions


def safe_token(text: str) -> str:
    """Lower-case ``text`` and squash anything not allowed in a subject token to ``_``.

    ``"Order Completed"`` becomes ``order_completed``.
    """
    token = _UNSAFE.sub("_", text.strip().lower()).strip("_")
    return token or "unknown"


@dataclass(frozen=True, slots=True)
class Naming:
    """Builds stream names and subjects for one namespace."""

    namespace: str = ""
    partitions: int = 16

    def stream_name(self, stream: Stream) -> str:
        return f"{self.namespace.upper()}_{stream.value}" if self.namespace else stream.value

    def root(self, stream: Stream) -> str:
        return f"{self.namespace}.{stream.root}" if self.namespace else stream.root

    def all_subjects(self, stream: Stream) -> str:
        """Wildcard covering every subject of ``stream``."""
        return f"{self.root(stream)}.>"

    def event_subject(self, subject_id: str, event_type: str) -> str:
        """``events.<partition>.<token>.<type>`` for an accepted customer event."""
        return self._partitioned(Stream.EVENTS, subject_id, event_type)

    def profile_subject(self, subject_id: str, change: str) -> str:
        """``profile.<partition>.<token>.<change>`` for a profile change or merge."""
        return self._partitioned(Stream.PROFILE, subject_id, change)

    def partition_filter(self, stream: Stream, partition: int) -> str:
        """Filter subject of one partition of EVENTS or PROFILE (for partitioned consumers)."""
        return f"{self.root(stream)}.{partition}.>"

    def rejected_subject(self, source: str, subject_id: str = "") -> str:
        """``rejected.<source>.<token>``; ``anonymous`` stands in when no subject id is known.

        The token lets an erasure purge a person's rejected events too.
        """
        token = subject_token(subject_id) if subject_id else "anonymous"
        return f"{self.root(Stream.REJECTED)}.{safe_token(source)}.{token}"

    def segment_subject(self, segment_id: str, subject_id: str, change: str) -> str:
        """``segment.<segment>.<token>.<entered|exited>``: the token lets an erasure purge a
        person's membership changes too."""
        token = subject_token(subject_id)
        return f"{self.root(Stream.SEGMENT)}.{safe_token(segment_id)}.{token}.{safe_token(change)}"

    def consent_subject(self, subject_id: str, purpose: str) -> str:
        return f"{self.root(Stream.CONSENT)}.{subject_token(subject_id)}.{safe_token(purpose)}"

    def privacy_subject(self, request_id: str, service: str, step: str) -> str:
        parts = (safe_token(request_id), safe_token(service), safe_token(step))
        return f"{self.root(Stream.PRIVACY)}." + ".".join(parts)

    def dead_letter_subject(self, service: str, consumer: str) -> str:
        return f"{self.root(Stream.DEADLETTER)}.{safe_token(service)}.{safe_token(consumer)}"

    def subject_filters(self, subject_id: str) -> dict[Stream, str]:
        """Per stream, the filter matching every message about ``subject_id`` (for erasure)."""
        token = subject_token(subject_id)
        partition = partition_of(subject_id, self.partitions)
        return {
            Stream.EVENTS: f"{self.root(Stream.EVENTS)}.{partition}.{token}.>",
            Stream.PROFILE: f"{self.root(Stream.PROFILE)}.{partition}.{token}.>",
            Stream.CONSENT: f"{self.root(Stream.CONSENT)}.{token}.>",
            Stream.REJECTED: f"{self.root(Stream.REJECTED)}.*.{token}",
            Stream.SEGMENT: f"{self.root(Stream.SEGMENT)}.*.{token}.*",
        }

    def _partitioned(self, stream: Stream, subject_id: str, last: str) -> str:
        partition = partition_of(subject_id, self.partitions)
        return f"{self.root(stream)}.{partition}.{subject_token(subject_id)}.{safe_token(last)}"
