"""The profile service behind consent and ingest, as real processes, shared by a module's
tests: sending events, granting consent, reading the projection's tables and each
replica's metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import status_pb2
from prometheus_client.parser import text_string_to_metric_families

from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.profile.v1 import profile_pb2_grpc
from tailor_cli.importing import uci
from tailor_core.auth import mint_token
from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.embedded import free_port
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup, ServiceProcess

SECRET = "p" * 40
SAMPLE = Path(__file__).resolve().parents[4] / "data/uci-online-retail/sample.csv.gz"
Metadata = tuple[tuple[str, str], ...]


def bearer(*scopes: str, kind: str = "compliance") -> Metadata:
    return (("authorization", f"Bearer {mint_token(SECRET, 'staff-1', kind, list(scopes))}"),)  # type: ignore[arg-type]


STAFF = bearer("ingest:admin")
OFFICER = bearer("consent:write")
READER = bearer("profile:read", kind="service")
ADMIN = bearer("profile:admin", "profile:read")


@dataclass(frozen=True)
class Totals:
    orders: int = 0
    refunds: int = 0
    revenue: Decimal = Decimal(0)


def totals_from_file(path: Path) -> dict[str, Totals]:
    """Orders, refunds and net revenue per customer computed from the file alone (invoices
    with a negative line are skipped: ingest rejects them)."""
    found: dict[str, Totals] = {}
    for invoice in uci.read_invoices(path):
        sent = uci.invoice_event(invoice)
        order = sent.track.order
        if any(p.quantity < 0 or Decimal(p.price.amount or 0) < 0 for p in order.products):
            continue
        subject = sent.user_id or sent.anonymous_id
        was = found.get(subject, Totals())
        amount = Decimal(order.revenue.amount)
        if sent.track.event == "Order Completed":
            found[subject] = Totals(was.orders + 1, was.refunds, was.revenue + amount)
        else:
            found[subject] = Totals(was.orders, was.refunds + 1, was.revenue - amount)
    return found


@dataclass
class Platform:
    group: ServiceGroup
    naming: Naming
    pg: asyncpg.Connection
    schema: str
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    _key: Metadata = ()

    @property
    def profile(self) -> ServiceProcess:
        return self.group.services["profile"]

    def _channel(self, name: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.group.services[name].address)
        self.channels.append(channel)
        return channel

    def profiles(self) -> profile_pb2_grpc.ProfileServiceStub:
        return profile_pb2_grpc.ProfileServiceStub(self._channel("profile"))

    async def grant(self, subject: str, *purposes: str) -> None:
        await consent_pb2_grpc.ConsentServiceStub(self._channel("consent")).GrantConsent(
            consent_pb2.GrantConsentRequest(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=OFFICER,
        )

    async def withdraw(self, subject: str, *purposes: str) -> None:
        await consent_pb2_grpc.ConsentServiceStub(self._channel("consent")).WithdrawConsent(
            consent_pb2.WithdrawConsentRequest(
                subject_id=subject,
                purposes=list(purposes),
                metadata=consent_pb2.DecisionMetadata(source=consent_pb2.CONSENT_SOURCE_API),
            ),
            metadata=OFFICER,
        )

    async def api_key(self) -> Metadata:
        if not self._key:
            created = await admin_pb2_grpc.IngestAdminServiceStub(
                self._channel("ingest")
            ).CreateApiKey(admin_pb2.CreateApiKeyRequest(source_id="app"), metadata=STAFF)
            self._key = (("x-api-key", created.secret),)
        return self._key

    async def send(self, *events: events_pb2.CustomerEvent) -> ingest_pb2.BatchResponse:
        reply: ingest_pb2.BatchResponse = await ingest_pb2_grpc.IngestServiceStub(
            self._channel("ingest")
        ).Batch(ingest_pb2.BatchRequest(events=list(events)), metadata=await self.api_key())
        return reply

    async def projected_totals(self) -> dict[str, Totals]:
        """Orders, refunds and net revenue of every profile, as the projection holds them."""
        rows = await self.pg.fetch(f'SELECT profile_id, state FROM "{self.schema}".profiles')
        totals = {}
        for row in rows:
            life = json.loads(row["state"])["life"]
            totals[row["profile_id"]] = Totals(
                life["orders"], life["refunds"], Decimal(life["rev"])
            )
        return totals

    async def applied(self) -> int:
        return int(await self.pg.fetchval(f'SELECT count(*) FROM "{self.schema}".applied_events'))


def with_metrics(process: ServiceProcess) -> ServiceProcess:
    """Give ``process`` a metrics port of its own, so a test can read what it did."""
    process.extra_env["TAILOR_METRICS_PORT"] = str(free_port())
    return process


async def scrape(process: ServiceProcess) -> dict[str, float]:
    """The process's Prometheus samples, each name summed over its labels."""
    url = f"http://127.0.0.1:{process.extra_env['TAILOR_METRICS_PORT']}/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(fetch)):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    group = ServiceGroup(
        infra,
        unique_name("pr"),
        SECRET,
        tmp_path_factory.mktemp("profile-logs"),
        names=("consent", "ingest", "profile"),
    )
    group.services["profile"].extra_env["TAILOR_PARTITION_HEARTBEAT_SECONDS"] = "0.3"
    with_metrics(group.services["profile"])
    await group.start()
    naming = Naming(group.namespace, 4)
    pg = await asyncpg.connect(infra.pg_dsn)
    found = Platform(group, naming, pg, group.services["profile"].schema)
    try:
        yield found
    finally:
        for channel in found.channels:
            await channel.close()
        await group.stop()
        await pg.close()
        nc = await connect(infra.nats_url, name="profile-tests")
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])
        await nc.drain()
        await group.drop_schemas()


def event(**fields: Any) -> events_pb2.CustomerEvent:
    """A customer event stamped now, with a fresh message id."""
    found = events_pb2.CustomerEvent(message_id=unique_name("m"), **fields)
    found.timestamp.FromDatetime(datetime.now(UTC))
    return found


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError("no status details")
