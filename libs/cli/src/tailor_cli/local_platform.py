"""`tailor up`: the whole platform on one machine, as separate processes.

Infrastructure comes from TAILOR_PG_DSN / TAILOR_NATS_URL when set, else from the
embedded servers. Each service gets its own role and schema, runs its migrations, and is
started as ``python -m tailor_<name>``; ``up`` waits for all of them to answer SERVING,
then supervises them until Ctrl-C/SIGTERM or until one dies, and stops everything in
order: services first, then the embedded servers. Children die with the launcher even if
it is killed (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tailor_cli import render
from tailor_cli.health import SERVING, check, check_all
from tailor_core.db import provision_service_database, redact_dsn
from tailor_core.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent
from tailor_core.settings import DEFAULT_PORTS, SERVICE_NAMES

STATE_FILE = "state.json"
SECRET_FILE = "token-secret"
MASTER_KEY_FILE = "master-key"
LOCAL_MASTER_KEY_ID = "local-1"


class PlatformError(Exception):
    """``up`` could not bring the platform up; the message says which part and why."""


@dataclass
class ServiceSpec:
    name: str
    grpc_port: int
    metrics_port: int
    argv: list[str]

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics" if self.metrics_port else ""


def default_specs(services: Sequence[str], base_port: int | None) -> list[ServiceSpec]:
    """The five services (or the ones named), consent first: the others depend on it."""
    specs = []
    for index, name in enumerate(n for n in SERVICE_NAMES if n in services):
        grpc_port, metrics_port = DEFAULT_PORTS[name]
        if base_port is not None:
            grpc_port, metrics_port = base_port + index, base_port + 100 + index
        specs.append(
            ServiceSpec(name, grpc_port, metrics_port, [sys.executable, "-m", f"tailor_{name}"])
        )
    return specs


@dataclass
class State:
    """What ``status`` and ``down`` need to find a running ``up``."""

    up_pid: int
    services: list[dict[str, Any]] = field(default_factory=list)
    postgres: str = ""
    nats: str = ""
    infra_pids: list[int] = field(default_factory=list)

    def save(self, data_dir: Path) -> None:
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, data_dir: Path) -> State | None:
        try:
            return cls(**json.loads((data_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret made once and kept in the data dir, readable by this user only."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value)
    return value


def token_secret(data_dir: Path) -> str:
    """The platform's token secret, kept so that the CLI can mint tokens later."""
    return _kept_secret(data_dir / SECRET_FILE, lambda: secrets.token_urlsafe(48))


def master_key(data_dir: Path) -> str:
    """The local master key wrapping subject data keys (base64 of 32 random bytes)."""
    return _kept_secret(
        data_dir / MASTER_KEY_FILE, lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalPlatform:
    def __init__(
        self, data_dir: Path, specs: list[ServiceSpec], ready_timeout: float = 90.0
    ) -> None:
        self.data_dir = data_dir
        self.specs = specs
        self.ready_timeout = ready_timeout
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self) -> State:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        previous = State.load(self.data_dir)
        if previous and _alive(previous.up_pid) and previous.up_pid != os.getpid():
            raise PlatformError(f"already running (pid {previous.up_pid}); `tailor down` stops it")
        admin_dsn, nats_url = self._infrastructure()
        secret = token_secret(self.data_dir)
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        for spec in self.specs:
            service_dsn = await provision_service_database(admin_dsn, spec.name, self._schema(spec))
            self._launch(spec, service_dsn, nats_url, secret, logs / f"{spec.name}.log")
            if spec.name == "consent":  # the others check consent from their first request
                await self._wait_serving([spec])
        await self._wait_serving(self.specs)
        state = State(
            up_pid=os.getpid(),
            services=[
                {
                    "name": s.name,
                    "grpc": s.grpc_address,
                    "metrics": s.metrics_url,
                    "pid": self.procs[s.name].pid,
                }
                for s in self.specs
            ],
            postgres=redact_dsn(admin_dsn) + (" (embedded)" if self.postgres else ""),
            nats=nats_url + (" (embedded)" if self.nats else ""),
            infra_pids=[pid for pid in (self._pid(self.postgres), self._pid(self.nats)) if pid],
        )
        state.save(self.data_dir)
        return state

    @staticmethod
    def _pid(server: EmbeddedPostgres | EmbeddedNats | None) -> int | None:
        return server.pid if server else None

    def _infrastructure(self) -> tuple[str, str]:
        admin_dsn = os.environ.get("TAILOR_PG_DSN", "")
        nats_url = os.environ.get("TAILOR_NATS_URL", "")
        if not admin_dsn:
            render.console.print("starting embedded Postgres…")
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres").start()
            admin_dsn = self.postgres.dsn
        if not nats_url:
            render.console.print("starting embedded NATS with JetStream…")
            self.nats = EmbeddedNats(self.data_dir / "nats").start()
            nats_url = self.nats.url
        return admin_dsn, nats_url

    @staticmethod
    def _schema(spec: ServiceSpec) -> str:
        """The service's schema; a namespace (several platforms on one server) prefixes it."""
        namespace = os.environ.get("TAILOR_NAMESPACE", "")
        return f"{namespace}_{spec.name}" if namespace else spec.name

    def _launch(
        self, spec: ServiceSpec, dsn: str, nats_url: str, secret: str, log_path: Path
    ) -> None:
        consent = next((s for s in self.specs if s.name == "consent"), None)
        env = {
            **os.environ,
            "TAILOR_PG_DSN": dsn,
            "TAILOR_NATS_URL": nats_url,
            "TAILOR_GRPC_HOST": "127.0.0.1",
            "TAILOR_GRPC_PORT": str(spec.grpc_port),
            "TAILOR_METRICS_PORT": str(spec.metrics_port),
            "TAILOR_TOKEN_SECRET": secret,
            "TAILOR_CONSENT_ADDR": consent.grpc_address
            if consent
            else os.environ.get("TAILOR_CONSENT_ADDR", ""),
            "TAILOR_PG_SCHEMA": self._schema(spec),
        }
        if spec.name == "consent":  # only the consent service ever sees the master key
            env["TAILOR_MASTER_KEYS"] = f"{LOCAL_MASTER_KEY_ID}:{master_key(self.data_dir)}"
            env["TAILOR_MASTER_KEY_ID"] = LOCAL_MASTER_KEY_ID
        with log_path.open("ab") as log:
            self.procs[spec.name] = subprocess.Popen(
                spec.argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                start_new_session=True,  # Ctrl-C reaches `up`, which stops services in order
            )

    async def _wait_serving(self, specs: Sequence[ServiceSpec]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = {spec.name: spec for spec in specs}
        while pending:
            for name, spec in list(pending.items()):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise PlatformError(
                        f"{name} exited with code {proc.returncode} while starting; its log ends:\n"
                        + _log_tail(self.data_dir / "logs" / f"{name}.log")
                    )
                if await check(spec.grpc_address, timeout=1.0) == SERVING:
                    del pending[name]
            if pending and time.monotonic() > deadline:
                names = ", ".join(sorted(pending))
                raise PlatformError(f"not SERVING after {self.ready_timeout:.0f} s: {names}")
            if pending:
                await asyncio.sleep(0.2)

    async def supervise(self) -> int:
        """Wait for Ctrl-C/SIGTERM (exit 0) or a service dying (exit 1)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                for name in dead:
                    code = self.procs[name].returncode
                    log_tail = _log_tail(self.data_dir / "logs" / f"{name}.log")
                    render.console.print(
                        f"[red]{name} exited with code {code}[/]; log:\n{log_tail}"
                    )
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        return 0

    def stop(self, grace_seconds: float = 20.0) -> None:
        """Stop services (SIGTERM, then SIGKILL after the grace), then the embedded servers."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace_seconds
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.nats:
            self.nats.stop()
        if self.postgres:
            self.postgres.stop()
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)


async def up(
    data_dir: Path,
    specs: list[ServiceSpec],
    after_start: Callable[[State], Awaitable[None]] | None = None,
) -> int:
    """Start everything, run ``after_start`` once every service is SERVING (``tailor
    demo``), then supervise until Ctrl-C or a service dies."""
    platform = LocalPlatform(data_dir, specs)
    try:
        state = await platform.start()
        render.services_table(
            [{**s, "status": SERVING} for s in state.services], title="Tailor is up"
        )
        render.console.print(f"Postgres: {state.postgres}\nNATS:     {state.nats}")
        if after_start is not None:
            await after_start(state)
        render.console.print("Ctrl-C stops everything.")
        code = await platform.supervise()
    except PlatformError as exc:
        render.console.print(f"[red]tailor up failed:[/] {exc}")
        code = 1
    finally:
        render.console.print("stopping…")
        platform.stop()
    return code


async def status(data_dir: Path, as_json: bool) -> int:
    state = State.load(data_dir)
    rows = (
        state.services
        if state
        else [
            {"name": s.name, "grpc": s.grpc_address, "metrics": s.metrics_url, "pid": None}
            for s in default_specs(SERVICE_NAMES, None)
        ]
    )
    health = await check_all({str(row["name"]): str(row["grpc"]) for row in rows})
    report = [{**row, "status": health[str(row["name"])]} for row in rows]
    all_serving = len(report) == len(SERVICE_NAMES) and all(r["status"] == SERVING for r in report)
    if as_json:
        render.print_json({"services": report, "all_serving": all_serving})
    else:
        render.services_table(report, title="Tailor services")
    return 0 if all_serving else 1


def down(data_dir: Path, timeout: float = 60.0) -> int:
    state = State.load(data_dir)
    if state is None:
        render.console.print("nothing to stop: no platform started from this data directory")
        return 0
    if _alive(state.up_pid):
        os.kill(state.up_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(state.up_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    leftovers = [s["pid"] for s in state.services if s.get("pid")] + state.infra_pids
    for pid in leftovers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    render.console.print("stopped")
    return 0
