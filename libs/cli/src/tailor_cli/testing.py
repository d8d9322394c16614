"""Driving the ``tailor`` command line in tests, against services that
:func:`tailor_core.testing.platform.running_platform` started."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

from tailor_cli.local_platform import SECRET_FILE
from tailor_cli.main import main
from tailor_core.testing.platform import TEST_SECRET


def cli_data_dir(directory: Path) -> Path:
    """A data directory holding the token secret, as ``tailor up`` leaves it for the CLI."""
    (directory / SECRET_FILE).write_text(TEST_SECRET)
    return directory


async def run_tailor(data_dir: Path, *argv: str) -> tuple[int, str]:
    """``tailor --data-dir DATA_DIR ARGV…`` in-process: (exit code, everything printed)."""
    printed = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            return main(["--data-dir", str(data_dir), *argv])

    # In a thread: main() runs its own event loop, which cannot nest in the test's.
    code = await asyncio.to_thread(call)
    return code, printed.getvalue()
