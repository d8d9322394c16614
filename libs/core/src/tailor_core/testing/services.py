"""Running a real service as a separate process in a test, isolated by schema and namespace."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor_core.db import provision_service_database
from tailor_core.embedded import free_port
from tailor_core.testing.infra import Infra


class ServiceProcess:
    """``python -m tailor_<name>`` against the test's Postgres schema and NATS namespace."""

    def __init__(
        self, name: str, infra: Infra, *, schema: str, namespace: str, secret: str, log_dir: Path
    ) -> None:
        self.name = name
        self.infra = infra
        self.schema = schema
        self.namespace = namespace
        self.secret = secret
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> ServiceProcess:
        dsn = await provision_service_database(self.infra.pg_dsn, self.name, self.schema)
        env = {
            **os.environ,
            "TAILOR_PG_DSN": dsn,
            "TAILOR_PG_SCHEMA": self.schema,
            "TAILOR_NATS_URL": self.infra.nats_url,
            "TAILOR_NAMESPACE": self.namespace,
            "TAILOR_GRPC_HOST": "127.0.0.1",
            "TAILOR_GRPC_PORT": str(self.port),
            "TAILOR_METRICS_PORT": "0",
            "TAILOR_TOKEN_SECRET": self.secret,
            "TAILOR_PARTITIONS": "4",
            "TAILOR_HTTP_PORT": "0",  # ingest's HTTP intake: off unless a test asks for it
            **self.extra_env,
        }
        if self.name == "consent":
            env.setdefault(
                "TAILOR_MASTER_KEYS", f"test-1:{base64.b64encode(os.urandom(32)).decode()}"
            )
            env.setdefault("TAILOR_MASTER_KEY_ID", "test-1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                [sys.executable, "-m", f"tailor_{self.name}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not await self.serving():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not SERVING in {timeout} s")
            await asyncio.sleep(0.1)
        return self

    async def serving(self) -> bool:
        try:
            async with grpc.aio.insecure_channel(self.address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class ServiceGroup:
    """Services as separate processes in one namespace (all five unless ``names`` says
    otherwise), consent first."""

    def __init__(
        self,
        infra: Infra,
        namespace: str,
        secret: str,
        log_dir: Path,
        names: Sequence[str] | None = None,
    ) -> None:
        from tailor_core.settings import SERVICE_NAMES

        self.namespace = namespace
        self.services = {
            name: ServiceProcess(
                name,
                infra,
                schema=f"{namespace}_{name}",
                namespace=namespace,
                secret=secret,
                log_dir=log_dir,
            )
            for name in (names or SERVICE_NAMES)
        }

    @property
    def consent(self) -> ServiceProcess:
        return self.services["consent"]

    def replica(self, name: str) -> ServiceProcess:
        """Another process of service ``name`` on the same schema and namespace (not started):
        what a second pod of a Deployment is."""
        first = self.services[name]
        other = ServiceProcess(
            name,
            first.infra,
            schema=first.schema,
            namespace=self.namespace,
            secret=first.secret,
            log_dir=first.log_path.parent,
        )
        other.extra_env.update(first.extra_env)
        return other

    async def start(self) -> None:
        await self.consent.start()
        for service in self.services.values():
            service.extra_env["TAILOR_CONSENT_ADDR"] = self.consent.address
        await asyncio.gather(*(s.start() for n, s in self.services.items() if n != "consent"))

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.services.values()))

    async def drop_schemas(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.consent.infra.pg_dsn)
        try:
            for service in self.services.values():
                await conn.execute(f'DROP SCHEMA IF EXISTS "{service.schema}" CASCADE')
        finally:
            await conn.close()
