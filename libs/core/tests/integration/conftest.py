"""Fixtures for the core integration tests: workers in separate OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("worker.py")


@dataclass
class WorkerProcess:
    """worker.py running in its own process."""

    proc: asyncio.subprocess.Process

    def terminate(self) -> None:
        """SIGTERM: ask for a graceful shutdown."""
        self.proc.terminate()

    async def finish(self, timeout: float = 60.0) -> tuple[int, list[dict[str, Any]]]:
        """Wait for exit; return the exit code (-9 after SIGKILL) and the JSON lines printed."""
        out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        assert self.proc.returncode is not None
        return self.proc.returncode, lines


async def start_worker(
    command: str, args: dict[str, Any], *, failpoints: str = ""
) -> WorkerProcess:
    env = {**os.environ, "TAILOR_FAILPOINTS": failpoints}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        command,
        "--json",
        json.dumps(args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    return WorkerProcess(proc)


async def run_worker(
    command: str, args: dict[str, Any], *, failpoints: str = "", timeout: float = 60.0
) -> tuple[int, list[dict[str, Any]]]:
    """Run worker.py to completion in its own process."""
    return await (await start_worker(command, args, failpoints=failpoints)).finish(timeout)


@pytest.fixture
def worker() -> Callable[..., Awaitable[tuple[int, list[dict[str, Any]]]]]:
    """Runs worker.py to completion as a separate OS process."""
    return run_worker


@pytest.fixture
def worker_process() -> Callable[..., Awaitable[WorkerProcess]]:
    """Starts worker.py as a separate OS process and hands it back running."""
    return start_worker
