"""Segment commands: create, validate and preview rules in their text form, read and change
segments and their versions, membership, discovered clusters and audits; tables, or --json
for scripts.

A rule the service refuses is shown the way a compiler shows a syntax error: its
``line:column: message``, the rule's line, and a caret under the offending column; such a
refusal (and bad usage) exits 2, every other gRPC failure exits 1.

Credentials as for every command (``tailor_cli.connection``): ``TAILOR_TOKEN``, else a staff
token minted from the local platform's secret. The segment service's address:
``--segment-addr``, else ``TAILOR_SEGMENT_ADDR``, else the local platform.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

from tailor.common.v1 import common_pb2
from tailor.events.v1 import platform_events_pb2
from tailor.segment.v1 import segment_pb2, segment_pb2_grpc
from tailor_cli import render
from tailor_cli.connection import Metadata, service_address, staff_metadata
from tailor_cli.rpc_errors import describe, print_rpc_error

SEGMENT_SCOPES = ["segment:read", "segment:write"]
POLL_SECONDS = 0.5
BAD_USAGE = 2  # the exit code argparse uses for bad arguments; also a refused rule
MAX_SEGMENTS_PAGE = 500  # ListSegments' maximum page
MAX_VERSIONS_PAGE = 200  # ListSegmentVersions' maximum page
MAX_MEMBERS_PAGE = 1000  # ListMembers' maximum page
TOP_FEATURES = 3  # distinguishing features shown per cluster in tables

_RUNNING = segment_pb2.CLUSTER_RUN_STATE_RUNNING
_STATE_STYLES = {"active": "green", "backfilling": "yellow", "deleted": "red"}
_RUN_STYLES = {"completed": "green", "running": "yellow", "failed": "red"}


def add_commands(commands: Any) -> None:
    """Register ``segment`` and its actions on the top-level parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--segment-addr", default=None, help="segment service address (host:port)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)"
    )

    segment = commands.add_parser(
        "segment", help="segments: rules, membership, discovered clusters, audits"
    ).add_subparsers(dest="action", required=True)

    create = segment.add_parser(
        "create", parents=[common, waiting], help="create a segment from a rule's text form"
    )
    create.add_argument("segment_id", metavar="ID", help="lower-case letters, digits, - and _")
    _add_rule_arguments(create, required=True)
    create.add_argument("--name", default="", help="display name (default: the id)")
    create.add_argument("--description", default="")
    create.add_argument("--purpose", default="", help="purpose members consented to (marketing)")
    create.add_argument(
        "--wait", action="store_true", help="wait until backfilled (ACTIVE), then show its size"
    )

    validate = segment.add_parser(
        "validate", parents=[common], help="check a rule: its canonical text, or each problem"
    )
    _add_rule_arguments(validate, required=True)

    preview = segment.add_parser(
        "preview", parents=[common], help="size and a sample of a rule on current data"
    )
    _add_rule_arguments(preview, required=True)
    preview.add_argument("--purpose", default="", help="purpose members would need (marketing)")
    preview.add_argument("--sample", type=int, default=10, help="sample size, 0..100 (default 10)")

    listing = segment.add_parser("list", parents=[common], help="every segment, by id")
    listing.add_argument("--purpose", default="", help="only segments with this purpose")
    listing.add_argument("--include-deleted", action="store_true")

    get = segment.add_parser("get", parents=[common], help="one segment, now or at a version")
    get.add_argument("segment_id", metavar="ID")
    get.add_argument("--version", type=int, default=0, help="default: the current version")

    versions = segment.add_parser(
        "versions", parents=[common], help="every version of a segment, newest first"
    )
    versions.add_argument("segment_id", metavar="ID")

    update = segment.add_parser(
        "update", parents=[common, waiting], help="change a segment, creating a new version"
    )
    update.add_argument("segment_id", metavar="ID")
    _add_rule_arguments(update, required=False)
    update.add_argument("--name", default="")
    update.add_argument("--description", default=None)
    update.add_argument("--purpose", default="")
    update.add_argument(
        "--expected-version",
        type=int,
        default=0,
        help="refuse the change if the current version is another (default: do not check)",
    )
    update.add_argument("--wait", action="store_true", help="wait until the new version is ACTIVE")

    delete = segment.add_parser("delete", parents=[common], help="delete a segment")
    delete.add_argument("segment_id", metavar="ID")

    members = segment.add_parser(
        "members", parents=[common], help="current members of a segment, by entry time"
    )
    members.add_argument("segment_id", metavar="ID")
    members.add_argument(
        "--limit", type=int, default=100, help="most members to list (default 100; 0 = all)"
    )

    is_member = segment.add_parser(
        "is-member", parents=[common], help="whether a subject is a member now"
    )
    is_member.add_argument("segment_id", metavar="ID")
    is_member.add_argument("subject", metavar="SUBJECT", help="any id of the person")

    of = segment.add_parser("of", parents=[common], help="the segments a subject belongs to now")
    of.add_argument("subject", metavar="SUBJECT", help="any id of the person")
    of.add_argument("--purpose", default="", help="only segments with this purpose")

    cluster = segment.add_parser(
        "cluster", help="discovered segments: K-Means runs and their clusters"
    ).add_subparsers(dest="cluster_action", required=True)
    run_clustering = cluster.add_parser(
        "run", parents=[common, waiting], help="start a discovery run now"
    )
    run_clustering.add_argument("--k-min", type=int, default=0, help="smallest k tried (2)")
    run_clustering.add_argument("--k-max", type=int, default=0, help="largest k tried (10)")
    run_clustering.add_argument("--seed", type=int, default=0, help="same seed, same clusters")
    run_clustering.add_argument(
        "--feature",
        action="append",
        default=[],
        help="computed trait to cluster on (repeat; default: the behavioural vector)",
    )
    run_clustering.add_argument("--purpose", default="", help="consent the profiles need")
    run_clustering.add_argument("--wait", action="store_true", help="wait until it finishes")
    show = cluster.add_parser(
        "show", parents=[common], help="a run: silhouette per k, each cluster's features"
    )
    show.add_argument("run_id", metavar="RUN", nargs="?", default="", help="default: the latest")
    list_runs = cluster.add_parser("list", parents=[common], help="discovery runs, newest first")
    list_runs.add_argument("--limit", type=int, default=20)
    promote = cluster.add_parser(
        "promote", parents=[common, waiting], help="turn a discovered cluster into a segment"
    )
    promote.add_argument("run_id", metavar="RUN")
    promote.add_argument("cluster_id", metavar="CLUSTER", type=int)
    promote.add_argument("segment_id", metavar="SEGMENT_ID")
    promote.add_argument("--name", default="", help="default: the cluster's label")
    promote.add_argument("--description", default="")
    promote.add_argument("--purpose", default="", help="default: the run's purpose")
    promote.add_argument("--wait", action="store_true", help="wait until it is ACTIVE")

    audit = segment.add_parser(
        "audit",
        parents=[common],
        help="sizes, overlaps, warnings and composition against the population",
    )
    audit.add_argument("segment_ids", metavar="ID", nargs="*", help="default: every active segment")
    audit.add_argument(
        "--attribute",
        action="append",
        default=[],
        help="trait to compare with the population (repeat; default: age band, gender, country)",
    )
    audit.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="flag representation ratios outside [1/T, T] (default 1.25, the four-fifths rule)",
    )


def _add_rule_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    rule = parser.add_mutually_exclusive_group(required=required)
    rule.add_argument(
        "--rule",
        metavar="TEXT",
        default=None,
        help="""the rule's text form, e.g. 'event "Product Viewed" count >= 1 within 24h'""",
    )
    rule.add_argument(
        "--rule-file", metavar="F", type=Path, default=None, help="read the rule from F (- = stdin)"
    )


Stub = segment_pb2_grpc.SegmentServiceStub
Handler = Callable[[Stub, argparse.Namespace, Metadata], Awaitable[int]]


async def run(args: argparse.Namespace) -> int:
    """Run one segment command: 0 done, 1 a gRPC failure or an unmet wait, 2 bad usage or a
    rule the service refused."""
    action = f"cluster {args.cluster_action}" if args.action == "cluster" else args.action
    handlers: dict[str, Handler] = {
        "create": _create,
        "validate": _validate,
        "preview": _preview,
        "list": _list,
        "get": _get,
        "versions": _versions,
        "update": _update,
        "delete": _delete,
        "members": _members,
        "is-member": _is_member,
        "of": _of,
        "cluster run": _run_clustering,
        "cluster show": _show_run,
        "cluster list": _list_runs,
        "cluster promote": _promote,
        "audit": _audit,
    }
    try:
        args.rule_source = read_rule_source(args)
    except UsageError as error:
        _print_usage_error(f"tailor segment {action}: {error}", args.json)
        return BAD_USAGE
    credentials = staff_metadata(args.data_dir, SEGMENT_SCOPES)
    address = service_address(args.segment_addr or "", "segment", args.data_dir)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        try:
            return await handlers[action](stub, args, credentials)
        except grpc.aio.AioRpcError as error:
            if args.rule_source is not None and refuses_rule(error):
                print_rule_refusal(error, args.rule_source, args.json)
                return BAD_USAGE
            print_rpc_error(error, args.json)
            return 1
        except UsageError as error:
            _print_usage_error(f"tailor segment {action}: {error}", args.json)
            return BAD_USAGE


class UsageError(ValueError):
    """Arguments argparse accepted that still make no command (an unreadable rule file)."""


# --- rules and their problems ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSource:
    """A rule's text as sent, and where it came from (a file name, or empty for --rule)."""

    text: str
    origin: str = ""


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rule: 1-based ``line`` and ``column`` in the text form (0 when the
    service gave none), the path of the node in the protobuf form (may be empty), what is
    wrong."""

    line: int
    column: int
    message: str
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "path": self.path,
        }


def read_rule_source(args: argparse.Namespace) -> RuleSource | None:
    """The rule given by ``--rule`` or ``--rule-file`` (``-`` reads stdin), or None for a
    command without one."""
    text: str | None = getattr(args, "rule", None)
    path: Path | None = getattr(args, "rule_file", None)
    if text is not None:
        return RuleSource(text)
    if path is None:
        return None
    if str(path) == "-":
        return RuleSource(sys.stdin.read(), "<stdin>")
    try:
        return RuleSource(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the rule from {path}: {error}") from None


def _rule_input(source: RuleSource | None) -> segment_pb2.RuleInput | None:
    return None if source is None else segment_pb2.RuleInput(text=source.text)


_POSITION = re.compile(r"^(?P<line>\d+):(?P<column>\d+):\s?(?P<message>.*)$", re.DOTALL)


def is_rule_field(field: str) -> bool:
    """``rule``, ``rule.text`` or ``rule.rule.<path>``: the field violations about the rule."""
    return field == "rule" or field.startswith("rule.")


def problem_from_violation(field: str, description: str) -> RuleProblem:
    """A field violation about the rule as a problem: ``"1:42: expected …"`` gives line 1,
    column 42; a description without a position keeps the field as the path."""
    match = _POSITION.match(description)
    if match is None:
        return RuleProblem(0, 0, description, field)
    return RuleProblem(int(match["line"]), int(match["column"]), match["message"])


def refuses_rule(error: grpc.aio.AioRpcError) -> bool:
    """INVALID_ARGUMENT naming the rule among the fields at fault."""
    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return False
    return any(is_rule_field(f["field"]) for f in describe(error)["fields"])


def caret_excerpt(text: str, line: int, column: int) -> list[str]:
    """The ``line``-th line of ``text`` and, under it, a caret under ``column`` (both
    1-based, the column counted in characters as the service counts it). The caret is placed
    by terminal cells: a tab in the line stays a tab under it and a wide character takes two
    cells, so it stays under the character in any terminal. A column past the end points just
    after the last character (where a missing word was expected); a line outside the text
    gives nothing."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines) or column < 1:
        return []
    shown = lines[line - 1].rstrip("\r")
    before = shown[: column - 1]
    padding = "".join("\t" if char == "\t" else " " * cell_len(char) for char in before)
    return [shown, padding + "^"]


def problem_lines(source: RuleSource, problem: RuleProblem) -> list[str]:
    """How a compiler reports it: ``[origin:]line:column: message``, the rule's line, the
    caret; a problem without a position gives ``path: message``."""
    if problem.line < 1:
        where = f"{problem.path}: " if problem.path else ""
        return [f"{where}{problem.message}"]
    origin = f"{source.origin}:" if source.origin else ""
    excerpt = caret_excerpt(source.text, problem.line, problem.column)
    return [
        f"{origin}{problem.line}:{problem.column}: {problem.message}",
        *(f"  {row}" for row in excerpt),
    ]


def _print_problems(source: RuleSource, problems: list[RuleProblem]) -> None:
    for problem in problems:
        for row in problem_lines(source, problem):
            # Plain text, never wrapped: a wrapped line would move the caret off its column.
            render.console.print(row, markup=False, highlight=False, soft_wrap=True)


def print_rule_refusal(error: grpc.aio.AioRpcError, source: RuleSource, as_json: bool) -> None:
    """An INVALID_ARGUMENT about the rule: the status as ``rpc_errors`` describes it, each rule
    problem with its caret, then any other field at fault. ``--json`` adds ``problems``."""
    described = describe(error)
    rule_fields = [f for f in described["fields"] if is_rule_field(f["field"])]
    problems = [problem_from_violation(f["field"], f["description"]) for f in rule_fields]
    if as_json:
        render.print_json({**described, "problems": [p.as_dict() for p in problems]})
        return
    render.console.print(f"[red]{described['error']}[/]: {escape(described['message'])}")
    _print_problems(source, problems)
    for field in described["fields"]:
        if not is_rule_field(field["field"]):
            line = f"  {field['field']}: {field['description']} ({field['reason']})"
            render.console.print(escape(line))


# --- rendering helpers -----------------------------------------------------------------------


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, unquote_int64_if_possible=True)


def _label(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


def _when(stamp: Timestamp) -> str:
    """``2026-01-31 12:00:05`` (UTC), or empty when unset."""
    if not (stamp.seconds or stamp.nanos):
        return ""
    return stamp.ToDatetime().isoformat(sep=" ", timespec="seconds")


def _age(seconds: float) -> str:
    """``45 s``, ``12 min``, ``5.0 h``, ``3.2 d``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _print_usage_error(message: str, as_json: bool) -> None:
    if as_json:
        render.print_json({"error": "BAD_USAGE", "message": message})
    else:
        render.console.print(f"[red]error[/]: {escape(message)}")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _spinner(text: str, as_json: bool) -> contextlib.AbstractContextManager[Any]:
    """A spinner for people; nothing under --json, whose output is for scripts."""
    if as_json:
        return contextlib.nullcontext()
    return render.console.status(text, spinner="dots")


def _state(segment: segment_pb2.Segment) -> str:
    return _label(segment_pb2.SegmentState.Name(segment.state), "SEGMENT_STATE_")


def segment_summary(segment: segment_pb2.Segment) -> dict[str, Any]:
    """What the tables and --json show of a segment (state lower-case: ``active``)."""
    promoted = segment.HasField("promoted_from") and segment.promoted_from.run_id
    return {
        "segment_id": segment.segment_id,
        "name": segment.name,
        "description": segment.description,
        "state": _state(segment),
        "version": segment.version,
        "size": segment.size,
        "purpose": segment.purpose,
        "rule_text": segment.rule_text,
        "rule": _as_dict(segment.rule),
        "created_at": _when(segment.created_at),
        "updated_at": _when(segment.updated_at),
        "updated_by": segment.updated_by,
        "referenced_segment_ids": list(segment.referenced_segment_ids),
        "promoted_from": (
            {
                "run_id": segment.promoted_from.run_id,
                "cluster_id": segment.promoted_from.cluster_id,
            }
            if promoted
            else None
        ),
    }


def _show_segment(segment: segment_pb2.Segment, as_json: bool, title: str) -> None:
    summary = segment_summary(segment)
    if as_json:
        render.print_json(summary)
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    state = summary["state"]
    table.add_row("segment", escape(summary["segment_id"]))
    table.add_row("name", escape(summary["name"]))
    if summary["description"]:
        table.add_row("description", escape(summary["description"]))
    table.add_row("state", f"[{_STATE_STYLES.get(state, 'white')}]{state}[/]")
    table.add_row("version", str(summary["version"]))
    size = f"{summary['size']:,}" + (" (so far)" if state == "backfilling" else "")
    table.add_row("size", size)
    table.add_row("purpose", escape(summary["purpose"]))
    table.add_row("rule", escape(summary["rule_text"]))
    if summary["referenced_segment_ids"]:
        table.add_row("refers to", escape(", ".join(summary["referenced_segment_ids"])))
    if summary["promoted_from"]:
        origin = summary["promoted_from"]
        table.add_row(
            "promoted from", escape(f"run {origin['run_id']}, cluster {origin['cluster_id']}")
        )
    table.add_row("created", summary["created_at"])
    table.add_row("updated", f"{summary['updated_at']} by {escape(summary['updated_by'])}")
    render.console.print(table)


def _segments_table(segments: list[segment_pb2.Segment], title: str) -> Table:
    table = _table(title, "id", "name", "state", "version", "size", "purpose")
    for column in (table.columns[0], table.columns[2]):  # id and state stay whole
        column.no_wrap = True
    for segment in segments:
        state = _state(segment)
        table.add_row(
            escape(segment.segment_id),
            escape(segment.name),
            f"[{_STATE_STYLES.get(state, 'white')}]{state}[/]",
            str(segment.version),
            f"{segment.size:,}",
            escape(segment.purpose),
        )
    return table


# --- definitions -----------------------------------------------------------------------------


async def _wait_until_active(
    stub: Stub,
    segment: segment_pb2.Segment,
    creds: Metadata,
    timeout_seconds: float,
    *,
    as_json: bool,
) -> segment_pb2.Segment:
    """Poll until the segment's current version is backfilled (ACTIVE), or ``timeout_seconds``
    pass; the segment as last read, with its size."""
    deadline = time.monotonic() + timeout_seconds
    text = f"backfilling {segment.segment_id} (version {segment.version})…"
    with _spinner(text, as_json):
        while True:
            reply = await stub.GetSegment(
                segment_pb2.GetSegmentRequest(segment_id=segment.segment_id), metadata=creds
            )
            segment = reply.segment
            if segment.state != segment_pb2.SEGMENT_STATE_BACKFILLING:
                return segment
            if time.monotonic() >= deadline:
                return segment
            await asyncio.sleep(POLL_SECONDS)


async def _finish_write(
    stub: Stub,
    segment: segment_pb2.Segment,
    args: argparse.Namespace,
    creds: Metadata,
    title: str,
) -> int:
    """Show a created, changed or promoted segment, after waiting for it with --wait."""
    if args.wait:
        segment = await _wait_until_active(stub, segment, creds, args.timeout, as_json=args.json)
    _show_segment(segment, args.json, title)
    if args.wait and segment.state == segment_pb2.SEGMENT_STATE_BACKFILLING:
        if not args.json:
            render.console.print(
                f"[yellow]still backfilling after {args.timeout:.0f} s[/]: follow it with "
                f"`tailor segment get {segment.segment_id}`"
            )
        return 1
    return 0


async def _create(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.CreateSegment(
        segment_pb2.CreateSegmentRequest(
            segment_id=args.segment_id,
            name=args.name or args.segment_id,
            description=args.description,
            rule=_rule_input(args.rule_source),
            purpose=args.purpose,
        ),
        metadata=creds,
    )
    return await _finish_write(stub, reply.segment, args, creds, "Segment created")


async def _update(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    unchanged = args.rule_source is None and args.description is None
    if unchanged and not (args.name or args.purpose):
        raise UsageError("nothing to change: give --rule, --name, --description or --purpose")
    request = segment_pb2.UpdateSegmentRequest(
        segment_id=args.segment_id,
        expected_version=args.expected_version,
        name=args.name,
        purpose=args.purpose,
    )
    if args.description is not None:
        request.description = args.description
    rule = _rule_input(args.rule_source)
    if rule is not None:
        request.rule.CopyFrom(rule)
    reply = await stub.UpdateSegment(request, metadata=creds)
    return await _finish_write(stub, reply.segment, args, creds, "Segment updated")


async def _delete(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.DeleteSegment(
        segment_pb2.DeleteSegmentRequest(segment_id=args.segment_id), metadata=creds
    )
    if args.json:
        render.print_json({"segment_id": args.segment_id, "exited": reply.exited})
    else:
        render.console.print(
            f"deleted {escape(args.segment_id)}: {reply.exited:,} member(s) exited"
        )
    return 0


async def _get(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetSegment(
        segment_pb2.GetSegmentRequest(segment_id=args.segment_id, version=args.version),
        metadata=creds,
    )
    _show_segment(reply.segment, args.json, "Segment")
    return 0


async def list_segments(
    stub: Stub, request: segment_pb2.ListSegmentsRequest, creds: Metadata
) -> list[segment_pb2.Segment]:
    """Every segment the request selects, following page tokens to the end."""
    found: list[segment_pb2.Segment] = []
    token = ""
    while True:
        request.page.CopyFrom(common_pb2.PageRequest(page_size=MAX_SEGMENTS_PAGE, page_token=token))
        reply = await stub.ListSegments(request, metadata=creds)
        found += reply.segments
        token = reply.page.next_page_token
        if not token:
            return found


async def _list(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    segments = await list_segments(
        stub,
        segment_pb2.ListSegmentsRequest(purpose=args.purpose, include_deleted=args.include_deleted),
        creds,
    )
    if args.json:
        render.print_json([segment_summary(s) for s in segments])
    else:
        render.console.print(_segments_table(segments, f"{len(segments)} segment(s)"))
    return 0


async def _versions(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    found: list[segment_pb2.Segment] = []
    token = ""
    while True:
        reply = await stub.ListSegmentVersions(
            segment_pb2.ListSegmentVersionsRequest(
                segment_id=args.segment_id,
                page=common_pb2.PageRequest(page_size=MAX_VERSIONS_PAGE, page_token=token),
            ),
            metadata=creds,
        )
        found += reply.versions
        token = reply.page.next_page_token
        if not token:
            break
    if args.json:
        render.print_json([segment_summary(v) for v in found])
        return 0
    table = _table(
        f"Versions of {escape(args.segment_id)} (newest first)",
        "version",
        "name",
        "purpose",
        "rule",
        "saved",
        "by",
    )
    for version in found:
        table.add_row(
            str(version.version),
            escape(version.name),
            escape(version.purpose),
            escape(version.rule_text),
            _when(version.updated_at),
            escape(version.updated_by),
        )
    render.console.print(table)
    return 0


async def _validate(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    source: RuleSource = args.rule_source
    reply = await stub.ValidateRule(
        segment_pb2.ValidateRuleRequest(rule=_rule_input(source)), metadata=creds
    )
    problems = [RuleProblem(p.line, p.column, p.message, p.path) for p in reply.problems]
    if args.json:
        render.print_json(
            {
                "valid": reply.valid,
                "rule_text": reply.rule_text,
                "rule": _as_dict(reply.rule) if reply.valid else None,
                "problems": [p.as_dict() for p in problems],
            }
        )
    elif reply.valid:
        render.console.print("[green]valid[/]; canonical form:")
        # Unwrapped, so that it can be copied back into --rule.
        render.console.print(f"  {reply.rule_text}", markup=False, highlight=False, soft_wrap=True)
    else:
        render.console.print(f"[red]invalid[/]: {len(problems)} problem(s)")
        _print_problems(source, problems)
    return 0 if reply.valid else BAD_USAGE


async def _preview(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.PreviewSegment(
        segment_pb2.PreviewSegmentRequest(
            rule=_rule_input(args.rule_source), purpose=args.purpose, sample_size=args.sample
        ),
        metadata=creds,
    )
    summary = {
        "size": reply.size,
        "population": reply.population,
        "excluded_without_consent": reply.excluded_without_consent,
        "rule_text": reply.rule_text,
        "sample_subject_ids": list(reply.sample_subject_ids),
    }
    if args.json:
        render.print_json(summary)
        return 0
    table = Table(title="Preview", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("rule", escape(reply.rule_text))
    share = f" ({reply.size / reply.population:.1%})" if reply.population else ""
    table.add_row("size", f"{reply.size:,} of {reply.population:,} with consent{share}")
    table.add_row("excluded without consent", f"{reply.excluded_without_consent:,}")
    table.add_row("sample", escape(", ".join(reply.sample_subject_ids)) or "-")
    render.console.print(table)
    return 0


# --- membership ------------------------------------------------------------------------------


def membership_summary(membership: segment_pb2.Membership) -> dict[str, Any]:
    """What the tables and --json show of a membership (reason lower-case: ``rule_matched``)."""
    reason = platform_events_pb2.MembershipChangeReason.Name(membership.reason)
    return {
        "segment_id": membership.segment_id,
        "subject_id": membership.subject_id,
        "entered_at": _when(membership.entered_at),
        "reason": _label(reason, "MEMBERSHIP_CHANGE_REASON_"),
        "explanation": membership.explanation,
        "segment_version": membership.segment_version,
    }


@dataclass(frozen=True, slots=True)
class Members:
    members: list[segment_pb2.Membership]
    more: bool  # further members exist beyond the limit


async def list_members(stub: Stub, segment_id: str, limit: int, creds: Metadata) -> Members:
    """Up to ``limit`` members (0 = all), by entry time, following page tokens."""
    found: list[segment_pb2.Membership] = []
    token = ""
    while True:
        wanted = MAX_MEMBERS_PAGE if limit == 0 else min(limit - len(found), MAX_MEMBERS_PAGE)
        reply = await stub.ListMembers(
            segment_pb2.ListMembersRequest(
                segment_id=segment_id,
                page=common_pb2.PageRequest(page_size=wanted, page_token=token),
            ),
            metadata=creds,
        )
        found += reply.members
        token = reply.page.next_page_token
        if not token or (limit and len(found) >= limit):
            return Members(found[:limit] if limit else found, more=bool(token))


def _memberships_table(memberships: list[segment_pb2.Membership], title: str, key: str) -> Table:
    table = _table(title, key, "entered", "reason", "version", "explanation")
    table.columns[0].no_wrap = True
    for membership in memberships:
        summary = membership_summary(membership)
        table.add_row(
            escape(summary[key]),
            summary["entered_at"],
            summary["reason"],
            str(summary["segment_version"]),
            escape(summary["explanation"]),
        )
    return table


async def _members(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    found = await list_members(stub, args.segment_id, args.limit, creds)
    if args.json:
        render.print_json(
            {
                "segment_id": args.segment_id,
                "members": [membership_summary(m) for m in found.members],
                "more": found.more,
            }
        )
        return 0
    title = f"{len(found.members)} member(s) of {escape(args.segment_id)}, by entry time"
    render.console.print(_memberships_table(found.members, title, "subject_id"))
    if found.more:
        render.console.print(f"more members: raise --limit (now {args.limit}; 0 = all)")
    return 0


async def _is_member(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.IsMember(
        segment_pb2.IsMemberRequest(segment_id=args.segment_id, subject_id=args.subject),
        metadata=creds,
    )
    membership = membership_summary(reply.membership) if reply.member else None
    if args.json:
        render.print_json({"member": reply.member, "membership": membership})
    elif membership is None:
        render.console.print(
            f"{escape(args.subject)} is [yellow]not a member[/] of {escape(args.segment_id)}"
        )
    else:
        render.console.print(
            f"{escape(args.subject)} is a [green]member[/] of {escape(args.segment_id)} since "
            f"{membership['entered_at']} (version {membership['segment_version']}, "
            f"{membership['reason']}): {escape(membership['explanation'])}"
        )
    return 0


async def _of(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.ListSubjectSegments(
        segment_pb2.ListSubjectSegmentsRequest(subject_id=args.subject, purpose=args.purpose),
        metadata=creds,
    )
    memberships = list(reply.memberships)
    if args.json:
        render.print_json(
            {
                "subject_id": args.subject,
                "memberships": [membership_summary(m) for m in memberships],
            }
        )
        return 0
    if not memberships:
        render.console.print(f"{escape(args.subject)} belongs to no segment")
        return 0
    title = f"Segments of {escape(args.subject)}"
    render.console.print(_memberships_table(memberships, title, "segment_id"))
    return 0


# --- discovery -------------------------------------------------------------------------------


def _run_state(run: segment_pb2.ClusterRun) -> str:
    return _label(segment_pb2.ClusterRunState.Name(run.state), "CLUSTER_RUN_STATE_")


def run_summary(run: segment_pb2.ClusterRun) -> dict[str, Any]:
    """What the tables and --json show of a discovery run (state lower-case)."""
    return {
        "run_id": run.run_id,
        "state": _run_state(run),
        "k": run.k,
        "silhouette": run.silhouette,
        "scores": [{"k": s.k, "silhouette": s.silhouette} for s in run.scores],
        "profiles": run.profiles,
        "seed": run.seed,
        "features": list(run.features),
        "purpose": run.purpose,
        "on_demand": run.on_demand,
        "started_at": _when(run.started_at),
        "finished_at": _when(run.finished_at) or None,
        "error": run.error,
        "clusters": [
            {
                "cluster_id": c.cluster_id,
                "size": c.size,
                "label": c.label,
                "promoted_segment_id": c.promoted_segment_id,
                "features": [
                    {
                        "feature": f.feature,
                        "cluster_mean": f.cluster_mean,
                        "population_mean": f.population_mean,
                        "z_score": f.z_score,
                    }
                    for f in c.features
                ],
            }
            for c in run.clusters
        ],
    }


def _took(run: segment_pb2.ClusterRun) -> str:
    if not run.HasField("finished_at"):
        return ""
    return f"{(run.finished_at.ToDatetime() - run.started_at.ToDatetime()).total_seconds():.1f} s"


def _show_cluster_run(run: segment_pb2.ClusterRun, as_json: bool) -> None:
    if as_json:
        render.print_json(run_summary(run))
        return
    state = _run_state(run)
    header = Table(title="Discovery run", title_justify="left", show_header=False)
    header.add_column("field")
    header.add_column("value")
    header.add_row("run", escape(run.run_id))
    header.add_row("state", f"[{_RUN_STYLES.get(state, 'white')}]{state}[/]")
    if run.k:
        header.add_row("k", f"{run.k} (silhouette {run.silhouette:.3f})")
    header.add_row("profiles", f"{run.profiles:,}")
    header.add_row("purpose", escape(run.purpose))
    header.add_row("features", escape(", ".join(run.features)) or "default")
    header.add_row("seed", str(run.seed))
    trigger = "on demand" if run.on_demand else "schedule"
    header.add_row("started", f"{_when(run.started_at)} ({trigger})")
    if run.HasField("finished_at"):
        header.add_row("took", _took(run))
    if run.error:
        header.add_row("error", f"[red]{escape(run.error)}[/]")
    render.console.print(header)
    if run.scores:
        scores = _table("Silhouette per k", "k", "silhouette", "")
        for score in run.scores:
            chosen = "chosen" if score.k == run.k else ""
            scores.add_row(str(score.k), f"{score.silhouette:.3f}", chosen)
        render.console.print(scores)
    if run.clusters:
        clusters = _table("Clusters", "cluster", "size", "label", "top features (z)", "segment")
        for cluster in run.clusters:
            features = ", ".join(
                f"{f.feature} {f.z_score:+.2f}" for f in cluster.features[:TOP_FEATURES]
            )
            clusters.add_row(
                str(cluster.cluster_id),
                f"{cluster.size:,}",
                escape(cluster.label),
                escape(features),
                escape(cluster.promoted_segment_id),
            )
        render.console.print(clusters)


async def _run_clustering(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.RunClustering(
        segment_pb2.RunClusteringRequest(
            k_min=args.k_min,
            k_max=args.k_max,
            seed=args.seed,
            features=args.feature,
            purpose=args.purpose,
        ),
        metadata=creds,
    )
    run = reply.run
    if args.wait:
        deadline = time.monotonic() + args.timeout
        with _spinner(f"clustering ({run.run_id})…", args.json):
            while run.state == _RUNNING and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
                found = await stub.GetClusterRun(
                    segment_pb2.GetClusterRunRequest(run_id=run.run_id), metadata=creds
                )
                run = found.run
    _show_cluster_run(run, args.json)
    if args.wait and run.state == _RUNNING and not args.json:
        render.console.print(
            f"[yellow]still running after {args.timeout:.0f} s[/]: follow it with "
            f"`tailor segment cluster show {run.run_id}`"
        )
    failed = run.state == segment_pb2.CLUSTER_RUN_STATE_FAILED
    unfinished = args.wait and run.state == _RUNNING
    return 1 if failed or unfinished else 0


async def _show_run(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetClusterRun(
        segment_pb2.GetClusterRunRequest(run_id=args.run_id), metadata=creds
    )
    _show_cluster_run(reply.run, args.json)
    return 0


async def _list_runs(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.ListClusterRuns(
        segment_pb2.ListClusterRunsRequest(page=common_pb2.PageRequest(page_size=args.limit)),
        metadata=creds,
    )
    if args.json:
        render.print_json([run_summary(r) for r in reply.runs])
        return 0
    if not reply.runs:
        render.console.print("no discovery run yet: start one with `tailor segment cluster run`")
        return 0
    table = _table(
        "Discovery runs (newest first)",
        "run",
        "state",
        "k",
        "silhouette",
        "profiles",
        "purpose",
        "started",
        "took",
        "trigger",
    )
    table.columns[0].no_wrap = True
    for run in reply.runs:
        state = _run_state(run)
        table.add_row(
            escape(run.run_id),
            f"[{_RUN_STYLES.get(state, 'white')}]{state}[/]",
            str(run.k or ""),
            f"{run.silhouette:.3f}" if run.k else "",
            f"{run.profiles:,}",
            escape(run.purpose),
            _when(run.started_at),
            _took(run),
            "on demand" if run.on_demand else "schedule",
        )
    render.console.print(table)
    return 0


async def _promote(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.PromoteCluster(
        segment_pb2.PromoteClusterRequest(
            run_id=args.run_id,
            cluster_id=args.cluster_id,
            segment_id=args.segment_id,
            name=args.name,
            description=args.description,
            purpose=args.purpose,
        ),
        metadata=creds,
    )
    return await _finish_write(stub, reply.segment, args, creds, "Cluster promoted")


# --- audits ----------------------------------------------------------------------------------


def audit_summary(reply: segment_pb2.AuditSegmentsResponse) -> dict[str, Any]:
    """The audit as --json shows it (warning kinds lower-case: ``tiny_segment``)."""
    return {
        "computed_at": _when(reply.computed_at),
        "segments": [
            {
                "segment_id": s.segment_id,
                "size": s.size,
                "population": s.population,
                "stale_member_share": s.stale_member_share,
                "median_data_age_seconds": s.median_data_age_seconds,
                "composition": [
                    {
                        "attribute": r.attribute,
                        "value": r.value,
                        "segment_share": r.segment_share,
                        "population_share": r.population_share,
                        "ratio": r.ratio,
                        "flagged": r.flagged,
                    }
                    for r in s.composition
                ],
            }
            for s in reply.segments
        ],
        "overlaps": [
            {"a": o.a, "b": o.b, "both": o.both, "jaccard": o.jaccard} for o in reply.overlaps
        ],
        "warnings": [
            {
                "kind": _label(segment_pb2.AuditWarningKind.Name(w.kind), "AUDIT_WARNING_KIND_"),
                "segment_ids": list(w.segment_ids),
                "message": w.message,
            }
            for w in reply.warnings
        ],
    }


def _print_audit(summary: dict[str, Any]) -> None:
    segments = _table(
        f"Segments (audited {summary['computed_at']})",
        "segment",
        "size",
        "population",
        "stale share",
        "median data age",
    )
    for item in summary["segments"]:
        segments.add_row(
            escape(item["segment_id"]),
            f"{item['size']:,}",
            f"{item['population']:,}",
            f"{item['stale_member_share']:.0%}",
            _age(item["median_data_age_seconds"]) if item["size"] else "",
        )
    render.console.print(segments)
    if summary["overlaps"]:
        overlaps = _table("Overlaps", "a", "b", "both", "jaccard")
        for pair in summary["overlaps"]:
            overlaps.add_row(
                escape(pair["a"]), escape(pair["b"]), f"{pair['both']:,}", f"{pair['jaccard']:.2f}"
            )
        render.console.print(overlaps)
    if summary["warnings"]:
        warnings = _table("Warnings", "kind", "segments", "message")
        for warning in summary["warnings"]:
            warnings.add_row(
                f"[yellow]{warning['kind']}[/]",
                escape(", ".join(warning["segment_ids"])),
                escape(warning["message"]),
            )
        render.console.print(warnings)
    else:
        render.console.print("no warnings")
    flagged = [
        (item["segment_id"], row)
        for item in summary["segments"]
        for row in item["composition"]
        if row["flagged"]
    ]
    if flagged:
        composition = _table(
            "Flagged composition (segment share against the population's)",
            "segment",
            "attribute",
            "value",
            "segment share",
            "population share",
            "ratio",
        )
        for segment_id, row in flagged:
            composition.add_row(
                escape(segment_id),
                escape(row["attribute"]),
                escape(row["value"]),
                f"{row['segment_share']:.1%}",
                f"{row['population_share']:.1%}",
                f"{row['ratio']:.2f}",
            )
        render.console.print(composition)


async def _audit(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.AuditSegments(
        segment_pb2.AuditSegmentsRequest(
            segment_ids=args.segment_ids,
            attributes=args.attribute,
            representation_threshold=args.threshold,
        ),
        metadata=creds,
    )
    summary = audit_summary(reply)
    if args.json:
        render.print_json(summary)
    else:
        _print_audit(summary)
    return 0
