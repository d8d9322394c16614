"""Readable tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()

_STYLE = {"SERVING": "green", "NOT_SERVING": "yellow", "UNREACHABLE": "red"}


def services_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("service", "status", "gRPC", "metrics", "pid"):
        table.add_column(column)
    for row in rows:
        status = str(row["status"])
        table.add_row(
            row["name"],
            f"[{_STYLE.get(status, 'white')}]{status}[/]",
            row["grpc"],
            row["metrics"],
            str(row.get("pid") or ""),
        )
    console.print(table)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))
