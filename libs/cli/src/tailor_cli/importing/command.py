"""``tailor import PATH``: replay a data file through ingest's public API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tailor.ingest.v1 import admin_pb2
from tailor_cli import render
from tailor_cli.connection import service_address, staff_metadata
from tailor_cli.importing import mapping, uci
from tailor_cli.importing.sender import ImportSummary, Item, send_items
from tailor_cli.local_platform import State
from tailor_client.errors import TailorError

UCI = "uci-online-retail"


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        "import", help="replay a data file (UCI Online Retail, CSV or JSON lines) through ingest"
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--format", choices=["auto", UCI, "mapped"], default="auto")
    parser.add_argument("--mapping", type=Path, help="column mapping (JSON) for CSV/JSON lines")
    parser.add_argument("--source", default="", help=f"source id (default: {UCI} or 'import')")
    parser.add_argument("--ingest-addr", default="", help="ingest's gRPC address")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def ingest_address(args: argparse.Namespace) -> str:
    return service_address(args.ingest_addr, "ingest", args.data_dir)


def staff_credentials(data_dir: Path) -> tuple[tuple[str, str], ...]:
    return staff_metadata(data_dir, ["ingest:admin"])


def uci_plan(source: str) -> admin_pb2.TrackingPlan:
    """The plan of a historical import: its two order events, and events up to 30 years old."""
    plan = admin_pb2.TrackingPlan(
        source_id=source,
        description="UCI Online Retail (2010-2011) replayed by tailor import",
        events=[
            admin_pb2.EventRule(event="Order Completed"),
            admin_pb2.EventRule(event="Order Refunded"),
        ],
        unplanned_events=admin_pb2.UNPLANNED_POLICY_REJECT,
    )
    plan.quality.max_event_age.FromTimedelta(timedelta(days=30 * 366))
    return plan


def load(path: Path, kind: str, mapping_path: Path | None) -> tuple[str, list[Item], Any]:
    """(format, items, file totals or None)."""
    if kind == "auto":
        with uci._open(path) as handle:
            header = handle.readline().strip().split(",")
        kind = UCI if uci.is_uci_header(header) else "mapped"
    if kind == UCI:
        items = [
            Item(uci.invoice_event(inv), len(inv.lines), inv.quantity, inv.amount)
            for inv in uci.read_invoices(path)
        ]
        return kind, items, uci.file_totals(path)
    if mapping_path is None:
        raise SystemExit("tailor import: give --mapping for a file that is not UCI Online Retail")
    columns = mapping.ColumnMapping.parse(json.loads(mapping_path.read_text()))
    return kind, [Item(mapping.row_event(row, columns)) for row in mapping.read_rows(path)], None


async def import_file(
    path: Path,
    *,
    ingest_addr: str,
    admin: tuple[tuple[str, str], ...],
    source: str = "",
    kind: str = "auto",
    mapping_path: Path | None = None,
    concurrency: int = 4,
    show_progress: bool = False,
) -> tuple[ImportSummary, Any]:
    """Import ``path``; returns the summary and the file's own totals (UCI only)."""
    kind, items, totals = load(path, kind, mapping_path)
    source = source or (UCI if kind == UCI else "import")
    plan = uci_plan(source) if kind == UCI else None
    total_lines = sum(item.lines for item in items)
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeRemainingColumn(),
        console=render.console,
        disable=not show_progress,
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=total_lines)
        summary = await send_items(
            items,
            ingest_addr=ingest_addr,
            admin=admin,
            source=source,
            plan=plan,
            concurrency=concurrency,
            progress=lambda lines: bar.advance(task, lines),
        )
    return summary, totals


def reconciles(summary: ImportSummary, totals: uci.FileTotals) -> bool:
    return (summary.lines, summary.events, summary.quantity, summary.amount) == (
        totals.lines,
        totals.invoices,
        totals.quantity,
        totals.amount,
    )


def print_summary(summary: ImportSummary, totals: uci.FileTotals | None) -> None:
    table = Table(title=f"import into source {summary.source}")
    for column in ("outcome", "events", "lines", "quantity", "amount"):
        table.add_column(column, justify="left" if column == "outcome" else "right")
    for name, tally in summary.outcomes.items():
        table.add_row(
            name,
            f"{tally.events:,}",
            f"{tally.lines:,}",
            f"{tally.quantity:,}",
            f"{tally.amount:,.2f}",
        )
    table.add_row(
        "[bold]sent",
        f"{summary.events:,}",
        f"{summary.lines:,}",
        f"{summary.quantity:,}",
        f"{summary.amount:,.2f}",
    )
    if totals is not None:
        table.add_row(
            "[bold]in the file",
            f"{totals.invoices:,}",
            f"{totals.lines:,}",
            f"{totals.quantity:,}",
            f"{totals.amount:,.2f}",
        )
    render.console.print(table)
    for title, counts in (
        ("rejected", summary.rejected_by_reason),
        ("suppressed", summary.suppressed_by_reason),
    ):
        if counts:
            reasons = Table(title=f"{title} events by reason")
            reasons.add_column("reason")
            reasons.add_column("events", justify="right")
            for reason, count in counts.most_common():
                reasons.add_row(reason, f"{count:,}")
            render.console.print(reasons)
    render.console.print(f"{summary.events_per_second:,.0f} events/s over {summary.seconds:.1f} s")
    if totals is not None:
        verdict = (
            "[green]reconciles exactly"
            if reconciles(summary, totals)
            else "[red]DOES NOT reconcile"
        )
        render.console.print(f"every line of the file accounted for: {verdict}")


async def run(args: argparse.Namespace) -> int:
    try:
        summary, totals = await import_file(
            args.path,
            ingest_addr=ingest_address(args),
            admin=staff_credentials(args.data_dir),
            source=args.source,
            kind=args.format,
            mapping_path=args.mapping,
            concurrency=args.concurrency,
            show_progress=not args.json,
        )
    except (OSError, ValueError) as error:
        render.console.print(f"[red]tailor import: {error}")
        return 2
    except TailorError as error:
        render.console.print(f"[red]tailor import: {type(error).__name__}: {error.message}")
        return 1
    if args.json:
        document = summary.as_dict()
        if totals is not None:
            document["file"] = {**asdict(totals), "amount": str(totals.amount)}
            document["reconciles"] = reconciles(summary, totals)
        render.print_json(document)
    else:
        print_summary(summary, totals)
    return 0 if totals is None or reconciles(summary, totals) else 1


def demo_import(sample: Path, data_dir: Path) -> Callable[[State], Awaitable[None]]:
    """What ``tailor demo`` does once the platform is up: import the sample, show the summary."""

    async def run_import(state: State) -> None:
        address = next(str(s["grpc"]) for s in state.services if s["name"] == "ingest")
        render.console.print(f"importing {sample} …")
        summary, totals = await import_file(
            sample, ingest_addr=address, admin=staff_credentials(data_dir), show_progress=True
        )
        print_summary(summary, totals)

    return run_import
