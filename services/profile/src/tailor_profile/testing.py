"""The profile service behind consent and ingest, as real processes, for tests: reading the
projection's tables and each replica's metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from google.rpc import status_pb2
from prometheus_client.parser import text_string_to_metric_families

from tailor.events.v1 import events_pb2
from tailor.profile.v1 import profile_pb2_grpc
from tailor_cli.importing.uci import CustomerTotals
from tailor_core.embedded import free_port
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, bearer, running_platform
from tailor_core.testing.services import ServiceProcess

STAFF = bearer("ingest:admin")
READER = bearer("profile:read", kind="service")
ADMIN = bearer("profile:admin", "profile:read")


class ProfilePlatform(RunningPlatform):
    """The running services, with what profile's tests ask of them."""

    @property
    def profile(self) -> ServiceProcess:
        return self.service("profile")

    @property
    def schema(self) -> str:
        return self.profile.schema

    def profiles(self) -> profile_pb2_grpc.ProfileServiceStub:
        return profile_pb2_grpc.ProfileServiceStub(self.channel("profile"))

    async def projected_totals(self) -> dict[str, CustomerTotals]:
        """Orders, refunds and net revenue of every profile, as the projection holds them."""
        rows = await self.pg.fetch(f'SELECT profile_id, state FROM "{self.schema}".profiles')
        totals = {}
        for row in rows:
            life = json.loads(row["state"])["life"]
            totals[row["profile_id"]] = CustomerTotals(
                life["orders"], life["refunds"], Decimal(life["rev"])
            )
        return totals

    async def applied(self) -> int:
        return int(await self.pg.fetchval(f'SELECT count(*) FROM "{self.schema}".applied_events'))


@asynccontextmanager
async def profile_platform(infra: Infra, log_dir: Path) -> AsyncIterator[ProfilePlatform]:
    """Consent, ingest and profile (fast heartbeats, metrics on) for one test module."""
    env = {
        "profile": {
            "TAILOR_PARTITION_HEARTBEAT_SECONDS": "0.3",
            "TAILOR_METRICS_PORT": str(free_port()),
        }
    }
    async with running_platform(
        infra, log_dir, ("consent", "ingest", "profile"), env=env, prefix="pr", kind=ProfilePlatform
    ) as running:
        assert isinstance(running, ProfilePlatform)
        yield running


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
