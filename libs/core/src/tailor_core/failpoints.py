"""Named points where a test can make a process crash on purpose.

``TAILOR_FAILPOINTS="outbox.after_publish=kill"`` makes the process SIGKILL itself the first
time it passes that point; ``=raise`` raises :class:`FailpointError` instead. Unset in
production, a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from functools import cache


class FailpointError(RuntimeError):
    """Raised at a failpoint configured with ``=raise``."""


@cache
def _parse(spec: str) -> dict[str, str]:
    actions: dict[str, str] = {}
    for item in spec.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            actions[name] = action or "kill"
    return actions


def hit(name: str) -> None:
    """Pass failpoint ``name``: act if the environment configures it."""
    action = _parse(os.environ.get("TAILOR_FAILPOINTS", "")).get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise FailpointError(name)
