"""`tailor up` brings five SERVING services up, each reflecting its v1 contract, and
`tailor status` / SIGTERM behave as documented, leaving no process behind.

Runs on whatever Postgres and NATS the session found (CI runs it twice: with the machine's
servers, then with the embedded ones that `tailor up` starts itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tailor_core.bus import connect, delete_streams, platform_streams
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.embedded_smoke]

TAILOR = [sys.executable, "-m", "tailor_cli.main"]
V1_SERVICES = {
    "consent": {
        "tailor.consent.v1.ConsentService",
        "tailor.consent.v1.KeyService",
        "tailor.consent.v1.AuditService",
        "tailor.privacy.v1.PrivacyService",
    },
    "ingest": {"tailor.ingest.v1.IngestService", "tailor.ingest.v1.IngestAdminService"},
    "profile": {"tailor.profile.v1.ProfileService"},
    "segment": {"tailor.segment.v1.SegmentService"},
    "recommend": {"tailor.recommend.v1.RecommendService"},
}


def _free_base_port() -> int:
    """A base with 5 free gRPC ports and 5 free metrics ports (base + 100 …)."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        ports = [base + i for i in range(5)] + [base + 100 + i for i in range(5)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


@pytest.fixture
async def platform_env(infra: Infra) -> AsyncIterator[dict[str, str]]:
    namespace = unique_name("e")
    env = {**os.environ, "TAILOR_NAMESPACE": namespace}
    if infra.source == "embedded":
        # The fresh-machine path: `tailor up` starts its own embedded servers.
        env.pop("TAILOR_PG_DSN", None)
        env.pop("TAILOR_NATS_URL", None)
        yield env
        return
    env["TAILOR_PG_DSN"] = infra.pg_dsn
    env["TAILOR_NATS_URL"] = infra.nats_url
    yield env
    # Shared servers: remove what the platform created in its namespace.
    conn = await asyncpg.connect(infra.pg_dsn)
    try:
        for service in V1_SERVICES:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}_{service}" CASCADE')
    finally:
        await conn.close()
    nc = await connect(infra.nats_url, "tests-cleanup")
    try:
        naming = Naming(namespace)
        await delete_streams(nc.jetstream(), [spec.name for spec in platform_streams(naming)])
    finally:
        await nc.drain()


@pytest.fixture
def running_platform(
    tmp_path: Path, platform_env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    base = _free_base_port()
    data_dir = tmp_path / "platform"
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [*TAILOR, "--data-dir", str(data_dir), "up", "--base-port", str(base)],
        env=platform_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, data_dir, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def _status(data_dir: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [*TAILOR, "--data-dir", str(data_dir), "status", "--json"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode, json.loads(done.stdout)


async def _reflected_services(address: str) -> set[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        return {s.name async for r in replies for s in r.list_services_response.service}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_up_serves_five_services_then_stops_cleanly_on_sigterm(
    running_platform: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    proc, data_dir, _base = running_platform

    async def state_written() -> bool:
        assert proc.poll() is None, (data_dir.parent / "up.log").read_text()
        return (data_dir / "state.json").exists()

    await wait_until(state_written, timeout=120, message="tailor up ready")
    code, status = _status(data_dir)
    assert code == 0
    assert status["all_serving"] is True
    services = {row["name"]: row for row in status["services"]}  # type: ignore[attr-defined]
    assert set(services) == set(V1_SERVICES)

    for name, expected in V1_SERVICES.items():
        reflected = await _reflected_services(services[name]["grpc"])
        assert expected <= reflected, name
        assert "grpc.health.v1.Health" in reflected
    metrics = await asyncio.to_thread(
        lambda: urllib.request.urlopen(services["ingest"]["metrics"], timeout=5).read().decode()
    )
    assert "python_info" in metrics

    state = json.loads((data_dir / "state.json").read_text())
    children = [row["pid"] for row in state["services"]] + state["infra_pids"]
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert [pid for pid in children if _alive(pid)] == []
    assert not (data_dir / "state.json").exists()
    code, status = _status(data_dir)
    assert code == 1
    assert status["all_serving"] is False


async def test_up_names_the_service_that_cannot_start_and_leaves_nothing_running(
    tmp_path: Path, platform_env: dict[str, str]
) -> None:
    env = {**platform_env, "TAILOR_PARTITIONS": "0"}  # every service refuses this setting
    done = await asyncio.to_thread(
        subprocess.run,
        [*TAILOR, "--data-dir", str(tmp_path / "p"), "up", "--base-port", str(_free_base_port())],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = done.stdout.decode()
    assert done.returncode == 1
    assert "consent exited with code 2" in output
    assert "TAILOR_PARTITIONS" in output
