"""`tailor import` replays the real-data sample through ingest and accounts for every line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from tailor_cli.importing import uci
from tailor_cli.importing.command import import_file, reconciles
from tailor_core.auth import mint_token
from tailor_core.bus import delete_streams, platform_streams
from tailor_core.streams import Naming, Stream
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup, ServiceProcess
from tailor_core.testing.streams import stream_message_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.embedded_smoke]

SECRET = "m" * 40
SAMPLE = Path(__file__).resolve().parents[2] / "data/uci-online-retail/sample.csv.gz"
STAFF = (
    ("authorization", f"Bearer {mint_token(SECRET, 'staff', 'compliance', ['ingest:admin'])}"),
)


@pytest.fixture
async def ingest(
    infra: Infra, nc: NatsClient, tmp_path: Path
) -> AsyncIterator[tuple[ServiceProcess, Naming]]:
    group = ServiceGroup(infra, unique_name("m"), SECRET, tmp_path, names=("consent", "ingest"))
    await group.start()
    naming = Naming(group.namespace, 4)
    try:
        yield group.services["ingest"], naming
    finally:
        await group.stop()
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])
        await group.drop_schemas()


async def test_the_sample_imports_and_reconciles_exactly_with_the_file(
    ingest: tuple[ServiceProcess, Naming], nc: NatsClient
) -> None:
    service, naming = ingest
    totals = uci.file_totals(SAMPLE)
    summary, _ = await import_file(SAMPLE, ingest_addr=service.address, admin=STAFF)
    assert reconciles(summary, totals)
    accepted, rejected = summary.outcomes["accepted"], summary.outcomes["rejected"]
    assert accepted.lines + rejected.lines == totals.lines  # orders need no analytics consent
    assert summary.outcomes["suppressed"].events == 0
    # Negative quantities outside a cancellation, and the negative bad-debt prices.
    assert {"NEGATIVE_QUANTITY", "NEGATIVE_AMOUNT"} <= set(summary.rejected_by_reason)
    refusable = [
        inv
        for inv in uci.read_invoices(SAMPLE)
        if not inv.cancelled and any(x.quantity < 0 or x.unit_price < 0 for x in inv.lines)
    ]
    assert rejected.events == len(refusable)
    assert rejected.lines == sum(len(inv.lines) for inv in refusable)
    published = await stream_message_ids(nc.jetstream(), naming.stream_name(Stream.EVENTS))
    assert len([i for i in published if i.startswith("uci-online-retail/")]) == accepted.events

    again, _ = await import_file(SAMPLE, ingest_addr=service.address, admin=STAFF)
    assert again.outcomes["duplicate"].events == accepted.events
    assert again.outcomes["accepted"].events == 0


async def test_the_command_prints_a_json_summary(
    ingest: tuple[ServiceProcess, Naming], tmp_path: Path
) -> None:
    service, _ = ingest
    rows = tmp_path / "views.csv"
    rows.write_text("user,sku,at\nu1,85123A,2026-11-20T10:00:00Z\nu2,71053,2026-11-20T10:01:00Z\n")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "event": {"value": "Product Viewed"},
                "user_id": "user",
                "timestamp": "at",
                "properties": ["sku"],
            }
        )
    )
    env = {**os.environ, "TAILOR_TOKEN": STAFF[0][1].removeprefix("Bearer ")}
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tailor_cli.main",
            "--data-dir",
            str(tmp_path),
            "import",
            str(rows),
            "--mapping",
            str(mapping),
            "--source",
            "views",
            "--ingest-addr",
            service.address,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["events"] == 2
    # Product views are behaviour: without analytics consent they are not kept.
    assert document["outcomes"]["suppressed"]["events"] == 2
    assert document["suppressed_by_reason"] == {"NO_CONSENT (analytics)": 2}
