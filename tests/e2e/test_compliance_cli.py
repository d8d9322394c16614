"""The compliance command line against a real consent service: tables, --json, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from tailor_core.auth import mint_token
from tailor_core.bus import delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "t" * 40
SCOPES = ["consent:write", "consent:read", "audit:read", "privacy:admin"]


@pytest.fixture
async def consent(infra: Infra, nc: NatsClient, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    namespace = unique_name("c")
    service = ServiceProcess(
        "consent",
        infra,
        schema=f"{namespace}_consent",
        namespace=namespace,
        secret=SECRET,
        log_dir=tmp_path,
    )
    service.extra_env["TAILOR_DATA_HOLDERS"] = "consent"  # only this service runs here
    await service.start()
    try:
        yield service
    finally:
        service.stop()
        conn = await asyncpg.connect(infra.pg_dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{service.schema}" CASCADE')
        await conn.close()
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(Naming(namespace))])


async def tailor(consent: ServiceProcess, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "TAILOR_TOKEN": mint_token(SECRET, "officer-3", "compliance", SCOPES)}
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tailor_cli.main",
            "--data-dir",
            str(tmp_path),
            *args,
            "--consent-addr",
            consent.address,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout


async def test_officer_records_inspects_and_audits_consent(
    consent: ServiceProcess, tmp_path: Path
) -> None:
    code, out = await tailor(
        consent, tmp_path, "consent", "grant", "u-1", "analytics", "marketing", "--source", "banner"
    )
    assert code == 0
    assert "recorded 2 decision(s)" in out
    assert (await tailor(consent, tmp_path, "consent", "withdraw", "u-1", "marketing"))[0] == 0

    code, out = await tailor(consent, tmp_path, "consent", "show", "u-1", "--json")
    state = {p["purpose"]: p.get("allowed", False) for p in json.loads(out)["purposes"]}
    assert state["analytics"] is True
    assert state["marketing"] is False
    code, out = await tailor(consent, tmp_path, "consent", "history", "u-1")
    assert code == 0
    assert "withdrawn" in out
    assert "Consent history of u-1" in out

    code, out = await tailor(consent, tmp_path, "audit", "verify", "--json")
    assert code == 0
    assert json.loads(out)["intact"] is True


async def test_bad_input_exits_non_zero_naming_the_field(
    consent: ServiceProcess, tmp_path: Path
) -> None:
    code, out = await tailor(consent, tmp_path, "consent", "grant", "u-1", "telepathy", "--json")
    assert code == 1
    error = json.loads(out)
    assert error["error"] == "INVALID_ARGUMENT"
    assert error["fields"][0]["field"] == "purposes[0]"


async def test_export_and_erasure_from_the_command_line(
    consent: ServiceProcess, tmp_path: Path
) -> None:
    await tailor(consent, tmp_path, "consent", "grant", "u-9", "personalization")
    code, out = await tailor(consent, tmp_path, "dsr", "export", "u-9", "--wait")
    assert code == 0
    assert (
        json.loads(out)["services"]["consent"]["consent_decisions"][0]["purpose"]
        == "personalization"
    )

    code, _ = await tailor(consent, tmp_path, "dsr", "erase", "u-9")
    assert code == 2  # refuses without --yes
    code, out = await tailor(consent, tmp_path, "dsr", "erase", "u-9", "--yes", "--wait", "--json")
    assert code == 0
    assert json.loads(out)["state"] == "REQUEST_STATE_COMPLETED"
    code, out = await tailor(consent, tmp_path, "consent", "history", "u-9", "--json")
    assert json.loads(out) == []
