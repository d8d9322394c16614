"""Consent follows identity: when profiles merge, decisions carry over to the survivor.

The profile service publishes ``ProfilesMerged`` on ``profile.<partition>.<token>.merged``.
For each purpose, the latest decision among the merged ids and the survivor wins; when it
belongs to a merged id (say, an anonymous visitor who accepted the banner before logging
in), it is appended for the survivor with ``inherited_from`` set and the original decision
time, and announced on CONSENT like any decision, so every service's cache follows.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext

from tailor_consent.adapters import audit, repository
from tailor_consent.domain.ledger import Decision, DecisionMetadata, Source, latest_per_purpose
from tailor_consent.ledger_service import ConsentLedger
from tailor_core.bus import ConsumerSpec
from tailor_core.db import Connection
from tailor_core.envelopes import parse
from tailor_core.inbox import InboundMessage, InboxConsumer
from tailor_core.outbox import enqueue
from tailor_core.streams import Naming, Stream


def inherited_decisions(
    survivor: str, survivor_decisions: Sequence[Decision], merged: Sequence[Decision]
) -> list[Decision]:
    """The decisions to append for ``survivor`` so the later decision per purpose wins."""
    own = latest_per_purpose(survivor_decisions)
    theirs = latest_per_purpose(merged)
    carried = []
    now = datetime.now(UTC)
    for purpose, decision in sorted(theirs.items()):
        current = own.get(purpose)
        if current is not None and current.decided_at >= decision.decided_at:
            continue
        carried.append(
            dataclasses.replace(
                decision,
                decision_id=str(uuid.uuid4()),
                subject_id=survivor,
                metadata=DecisionMetadata(
                    Source.IDENTITY_MERGE,
                    decision.metadata.jurisdiction,
                    decision.metadata.policy_version,
                    decision.metadata.proof_reference,
                ),
                recorded_at=now,
                inherited_from=decision.subject_id,
            )
        )
    return carried


class IdentityFollower:
    def __init__(
        self, pool: asyncpg.Pool, js: JetStreamContext, naming: Naming, ledger: ConsentLedger
    ) -> None:
        self._pool = pool
        self._js = js
        self._naming = naming
        self._ledger = ledger

    async def handle(self, conn: Connection, message: InboundMessage) -> None:
        envelope = parse(message.data)
        if envelope.WhichOneof("payload") != "profiles_merged":
            return
        merge = envelope.profiles_merged
        survivor = merge.surviving_profile_id
        merged_ids = [m for m in merge.merged_profile_ids if m and m != survivor]
        if not survivor or not merged_ids:
            return
        found = await repository.decisions_of_many(conn, [survivor, *merged_ids])
        carried = inherited_decisions(
            survivor, found.get(survivor, []), [d for m in merged_ids for d in found.get(m, [])]
        )
        if not carried:
            return
        stored = await repository.append_decisions(conn, carried)
        await enqueue(conn, [self._ledger.announcement(d) for d in stored])
        for decision in stored:
            await audit.append(
                conn,
                "identity_merged",
                "identity_merge",
                subject_id=survivor,
                purpose=decision.purpose,
                details={
                    "kind": decision.kind.value,
                    "inherited": True,
                    "decision_id": decision.decision_id,
                },
            )

    def consumer(self) -> InboxConsumer:
        return InboxConsumer(
            pool=self._pool,
            js=self._js,
            spec=ConsumerSpec(
                stream=self._naming.stream_name(Stream.PROFILE),
                durable="consent_identity",
                filter_subject=f"{self._naming.root(Stream.PROFILE)}.*.*.merged",
                description="consent follows identity merges",
            ),
            handler=self.handle,
            dead_letter_subject=self._naming.dead_letter_subject("consent", "identity"),
        )
