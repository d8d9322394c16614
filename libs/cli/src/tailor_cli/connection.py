"""Where a service listens and which credentials the command line sends, for every command."""

from __future__ import annotations

import os
from pathlib import Path

from tailor_cli.local_platform import SECRET_FILE, State
from tailor_core.auth import mint_token
from tailor_core.settings import DEFAULT_PORTS

Metadata = tuple[tuple[str, str], ...]


def service_address(explicit: str, service: str, data_dir: Path) -> str:
    """The flag's value, else ``TAILOR_<SERVICE>_ADDR``, else the running ``tailor up``,
    else the service's default port on this machine."""
    if explicit:
        return explicit
    variable = f"TAILOR_{service.upper()}_ADDR"
    if os.environ.get(variable):
        return os.environ[variable]
    state = State.load(data_dir)
    if state:
        found = [str(s["grpc"]) for s in state.services if s["name"] == service]
        if found:
            return found[0]
    return f"127.0.0.1:{DEFAULT_PORTS[service][0]}"


def staff_metadata(data_dir: Path, scopes: list[str]) -> Metadata:
    """``TAILOR_TOKEN`` as a bearer token, else a short-lived staff token minted from the
    secret of the ``tailor up`` on this machine."""
    token = os.environ.get("TAILOR_TOKEN")
    if not token:
        secret_path = data_dir / SECRET_FILE
        if not secret_path.exists():
            raise SystemExit("no credentials: set TAILOR_TOKEN, or run `tailor up` on this machine")
        user = os.environ.get("USER", "operator")
        token = mint_token(
            secret_path.read_text().strip(), f"cli:{user}", "compliance", scopes, 900
        )
    return (("authorization", f"Bearer {token}"),)
