"""Sending an import through ingest's public API and accounting for every line."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2
from tailor_client import AsyncIngestClient, open_channel
from tailor_client.channel import Metadata
from tailor_core.envelopes import customer_subject_id

BATCH = 500
OUTCOMES = ("accepted", "duplicate", "rejected", "suppressed")


@dataclass(frozen=True, slots=True)
class Item:
    """One event and the part of the file it stands for."""

    event: events_pb2.CustomerEvent
    lines: int = 1
    quantity: int = 0
    amount: Decimal = Decimal(0)


@dataclass
class Tally:
    events: int = 0
    lines: int = 0
    quantity: int = 0
    amount: Decimal = Decimal(0)

    def add(self, item: Item) -> None:
        self.events += 1
        self.lines += item.lines
        self.quantity += item.quantity
        self.amount += item.amount


@dataclass
class ImportSummary:
    """What ingest answered, per outcome, with the lines behind each event."""

    source: str
    seconds: float = 0.0
    outcomes: dict[str, Tally] = field(default_factory=lambda: {o: Tally() for o in OUTCOMES})
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    suppressed_by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(t.events for t in self.outcomes.values())

    @property
    def lines(self) -> int:
        return sum(t.lines for t in self.outcomes.values())

    @property
    def quantity(self) -> int:
        return sum(t.quantity for t in self.outcomes.values())

    @property
    def amount(self) -> Decimal:
        return sum((t.amount for t in self.outcomes.values()), Decimal(0))

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def record(self, item: Item, result: ingest_pb2.EventResult) -> None:
        name = ingest_pb2.EventOutcome.Name(result.outcome).removeprefix("EVENT_OUTCOME_").lower()
        self.outcomes[name].add(item)
        if name == "rejected":
            for reason in sorted(
                {events_pb2.ValidationReason.Name(e.reason) for e in result.errors}
            ):
                self.rejected_by_reason[reason.removeprefix("VALIDATION_REASON_")] += 1
        elif name == "suppressed":
            reason = ingest_pb2.SuppressionReason.Name(result.suppression_reason)
            key = f"{reason.removeprefix('SUPPRESSION_REASON_')} ({result.suppression_purpose})"
            self.suppressed_by_reason[key] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "events": self.events,
            "lines": self.lines,
            "quantity": self.quantity,
            "amount": str(self.amount),
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_second, 1),
            "outcomes": {
                name: {
                    "events": t.events,
                    "lines": t.lines,
                    "quantity": t.quantity,
                    "amount": str(t.amount),
                }
                for name, t in self.outcomes.items()
            },
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "suppressed_by_reason": dict(sorted(self.suppressed_by_reason.items())),
        }


def lanes(items: Sequence[Item], count: int) -> list[list[Item]]:
    """Split items into ``count`` lanes by subject: one subject's events stay in one lane, in
    file order, so sending lanes side by side keeps every subject's order."""
    split: list[list[Item]] = [[] for _ in range(count)]
    for item in items:
        subject = customer_subject_id(item.event)
        split[zlib.crc32(subject.encode()) % count].append(item)
    return [lane for lane in split if lane]


async def send_items(
    items: Sequence[Item],
    *,
    ingest_addr: str,
    admin: Metadata,
    source: str,
    plan: admin_pb2.TrackingPlan | None = None,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Send ``items`` with a fresh API key for ``source`` (revoked at the end), after storing
    ``plan`` as the source's tracking plan when given."""
    summary = ImportSummary(source)
    channel = open_channel(ingest_addr, admin)
    try:
        stub = admin_pb2_grpc.IngestAdminServiceStub(channel)
        if plan is not None:
            await stub.PutTrackingPlan(admin_pb2.PutTrackingPlanRequest(plan=plan))
        key = await stub.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(
                source_id=source,
                label="tailor import",
                rate_limit_per_second=1_000_000,
                burst=1_000_000,
            )
        )
        try:
            started = asyncio.get_running_loop().time()
            async with AsyncIngestClient(ingest_addr, key.secret, max_retries=10) as client:

                async def lane(queue: list[Item]) -> None:
                    for start in range(0, len(queue), BATCH):
                        chunk = queue[start : start + BATCH]
                        results = await client.send([item.event for item in chunk])
                        for item, result in zip(chunk, results, strict=True):
                            summary.record(item, result)
                        if progress is not None:
                            progress(sum(item.lines for item in chunk))

                await asyncio.gather(*(lane(q) for q in lanes(items, max(1, concurrency))))
            summary.seconds = asyncio.get_running_loop().time() - started
        finally:
            await stub.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=key.key.key_id))
    finally:
        await channel.close()
    return summary
