"""Profile commands: rebuild by replay and its status, reading and finding profiles, merge
history and batch jobs; tables, or --json for scripts.

Credentials as for every command (``tailor_cli.connection``): ``TAILOR_TOKEN``, else a staff
token minted from the local platform's secret. The profile service's address:
``--profile-addr``, else ``TAILOR_PROFILE_ADDR``, else the local platform.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tailor.common.v1 import common_pb2
from tailor.profile.v1 import profile_pb2, profile_pb2_grpc
from tailor_cli import render
from tailor_cli.connection import Metadata, service_address, staff_metadata
from tailor_cli.rpc_errors import print_rpc_error

PROFILE_SCOPES = ["profile:read", "profile:admin"]
POLL_SECONDS = 0.5
MAX_PAGE_SIZE = 500  # FindProfiles' maximum page
BAD_USAGE = 2  # the exit code argparse uses for bad arguments

# "rfm-scores", "cohort-statistics", "staleness-scan": the proto's BatchJob names.
JOBS: dict[str, int] = {
    name.removeprefix("BATCH_JOB_").lower().replace("_", "-"): number
    for name, number in profile_pb2.BatchJob.items()
    if number != profile_pb2.BATCH_JOB_UNSPECIFIED
}
_FINISHED_REBUILD = (profile_pb2.REBUILD_STATE_COMPLETED, profile_pb2.REBUILD_STATE_FAILED)


def add_commands(commands: Any) -> None:
    """Register ``profile`` and its actions on the top-level parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile-addr", default=None, help="profile service address (host:port)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    profile = commands.add_parser(
        "profile", help="rebuild, read and search profiles; merges; batch jobs"
    ).add_subparsers(dest="action", required=True)

    rebuild = profile.add_parser(
        "rebuild", parents=[common], help="rebuild every profile by replaying EVENTS"
    )
    rebuild.add_argument("--reason", default="", help="why, for the record")
    rebuild.add_argument("--no-wait", action="store_true", help="start it and return")
    rebuild.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for it (default 3600)"
    )
    status = profile.add_parser("rebuild-status", parents=[common], help="progress of a rebuild")
    status.add_argument("rebuild_id", nargs="?", default="", help="default: the latest rebuild")

    get = profile.add_parser("get", parents=[common], help="one profile: traits, figures, ids")
    get.add_argument("subject", help="any id of the person (user id or anonymous id)")
    get.add_argument("--purpose", required=True, help="purpose the data serves")
    get.add_argument(
        "--non-personal-only", action="store_true", help="without consent, the non-personal part"
    )
    get.add_argument("--trait", action="append", default=[], help="only this trait or prefix.")

    find = profile.add_parser(
        "find", parents=[common], help="profiles matching trait conditions (all must hold)"
    )
    find.add_argument(
        "--where",
        action="append",
        required=True,
        metavar="CONDITION",
        help="'trait op value', e.g. 'computed.orders_lifetime >= 10'; "
        "ops: = != > >= < <= in, not in, contains, starts_with, exists, not exists, "
        "within_last 7d, before_last 30d",
    )
    find.add_argument("--purpose", required=True, help="purpose the data serves")
    find.add_argument("--order-by", default="", help="trait, optionally followed by ' desc'")
    find.add_argument("--limit", type=int, default=50, help="most profiles to list (default 50)")
    find.add_argument("--trait", action="append", default=[], help="only this trait or prefix.")

    merges = profile.add_parser(
        "merges", parents=[common], help="the merges a profile took part in"
    )
    merges.add_argument("subject")

    jobs = profile.add_parser("jobs", help="batch jobs: run one now, list runs").add_subparsers(
        dest="job_action", required=True
    )
    run_job = jobs.add_parser("run", parents=[common], help="run a batch job now")
    run_job.add_argument("job", choices=sorted(JOBS))
    run_job.add_argument("--wait", action="store_true", help="wait until the run finishes")
    run_job.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    list_jobs = jobs.add_parser("list", parents=[common], help="recent runs, newest first")
    list_jobs.add_argument("--job", choices=sorted(JOBS), default=None)
    list_jobs.add_argument("--limit", type=int, default=20)


Stub = profile_pb2_grpc.ProfileServiceStub
Handler = Callable[[Stub, argparse.Namespace, Metadata], Awaitable[int]]


async def run(args: argparse.Namespace) -> int:
    """Run one profile command; gRPC failures print their status and details, exit 1."""
    action = f"jobs {args.job_action}" if args.action == "jobs" else args.action
    handlers: dict[str, Handler] = {
        "rebuild": _rebuild,
        "rebuild-status": _rebuild_status,
        "get": _get,
        "find": _find,
        "merges": _merges,
        "jobs run": _run_job,
        "jobs list": _list_jobs,
    }
    credentials = staff_metadata(args.data_dir, PROFILE_SCOPES)
    address = service_address(args.profile_addr or "", "profile", args.data_dir)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        try:
            return await handlers[action](stub, args, credentials)
        except grpc.aio.AioRpcError as error:
            print_rpc_error(error, args.json)
            return 1
        except ConditionSyntaxError as error:
            _print_usage_error(f"tailor profile find: {error}", args.json)
            return BAD_USAGE


# --- conditions ------------------------------------------------------------------------------


class ConditionSyntaxError(ValueError):
    """A ``--where`` condition that does not read as ``trait op value``."""


_SYMBOL_OPS = {
    ">=": common_pb2.COMPARISON_GE,
    "<=": common_pb2.COMPARISON_LE,
    "!=": common_pb2.COMPARISON_NE,
    "==": common_pb2.COMPARISON_EQ,
    "=": common_pb2.COMPARISON_EQ,
    ">": common_pb2.COMPARISON_GT,
    "<": common_pb2.COMPARISON_LT,
}
_WORD_OPS = {
    "not in": common_pb2.COMPARISON_NOT_IN,
    "in": common_pb2.COMPARISON_IN,
    "contains": common_pb2.COMPARISON_CONTAINS,
    "starts_with": common_pb2.COMPARISON_STARTS_WITH,
    "not exists": common_pb2.COMPARISON_NOT_EXISTS,
    "exists": common_pb2.COMPARISON_EXISTS,
    "within_last": common_pb2.COMPARISON_WITHIN_LAST,
    "before_last": common_pb2.COMPARISON_BEFORE_LAST,
}
_CONDITION = re.compile(
    r"^\s*(?P<trait>[A-Za-z_][\w.]*)"
    r"(?:\s*(?P<symbol>>=|<=|!=|==|=|>|<)|\s+(?P<word>not\s+in|in|contains|starts_with"
    r"|not\s+exists|exists|within_last|before_last)(?=\s|$))"
    r"\s*(?P<operand>.*?)\s*$",
    re.IGNORECASE,
)
_DURATION = re.compile(r"^(?P<count>\d+)\s*(?P<unit>[smhdw])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_condition(text: str) -> profile_pb2.TraitCondition:
    """``"computed.orders_lifetime >= 10"`` -> a TraitCondition. Operands are JSON where they
    parse as JSON (``10``, ``true``, ``"GB"``), else plain text; ``in`` takes a JSON list or
    ``a,b,c``; ``within_last`` / ``before_last`` take ``<n>s|m|h|d|w``; ``exists`` none."""
    match = _CONDITION.match(text)
    if match is None:
        raise ConditionSyntaxError(
            f"cannot read {text!r}: write 'trait op value', e.g. 'computed.orders_30d >= 2'"
        )
    operator_text = match["symbol"] or " ".join(match["word"].lower().split())
    op = _SYMBOL_OPS.get(operator_text) or _WORD_OPS[operator_text]
    operand = match["operand"]
    if match["symbol"] and operand[:1] in ("<", ">", "=", "!"):
        raise ConditionSyntaxError(f"{text!r}: unknown operator {operator_text + operand[:1]!r}")
    condition = profile_pb2.TraitCondition(trait=match["trait"], op=op)
    if op in (common_pb2.COMPARISON_EXISTS, common_pb2.COMPARISON_NOT_EXISTS):
        if operand:
            raise ConditionSyntaxError(f"{text!r}: '{operator_text}' takes no value")
    elif op in (common_pb2.COMPARISON_WITHIN_LAST, common_pb2.COMPARISON_BEFORE_LAST):
        condition.duration.FromTimedelta(_duration(text, operand))
    elif not operand:
        raise ConditionSyntaxError(f"{text!r}: '{operator_text}' needs a value")
    elif op in (common_pb2.COMPARISON_IN, common_pb2.COMPARISON_NOT_IN):
        condition.value.CopyFrom(_as_value(_list_operand(operand)))
    else:
        value = _scalar(operand)
        if isinstance(value, list | dict):
            raise ConditionSyntaxError(f"{text!r}: '{operator_text}' compares with one value")
        condition.value.CopyFrom(_as_value(value))
    return condition


def _scalar(operand: str) -> Any:
    try:
        return json.loads(operand)
    except ValueError:
        return operand


def _list_operand(operand: str) -> list[Any]:
    if operand.startswith("["):
        try:
            parsed = json.loads(operand)
        except ValueError:
            raise ConditionSyntaxError(f"{operand!r} is not a JSON list") from None
        if isinstance(parsed, list):
            return parsed
    return [_scalar(item.strip()) for item in operand.split(",") if item.strip()]


def _duration(text: str, operand: str) -> timedelta:
    match = _DURATION.match(operand.strip().lower())
    if match is None:
        raise ConditionSyntaxError(f"{text!r}: give a duration such as 7d, 12h, 30m or 90s")
    return timedelta(**{_DURATION_UNITS[match["unit"]]: int(match["count"])})


def _as_value(value: Any) -> struct_pb2.Value:
    message = struct_pb2.Value()
    ParseDict(value, message)
    return message


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


def _value_text(value: struct_pb2.Value) -> str:
    """Text as is, whole numbers without ``.0`` (a Value holds every number as a double)."""
    plain = MessageToDict(value)
    if isinstance(plain, float) and plain.is_integer():
        plain = int(plain)
    return plain if isinstance(plain, str) else json.dumps(plain)


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


# --- rebuild ---------------------------------------------------------------------------------


def rebuild_summary(rebuild: profile_pb2.Rebuild) -> dict[str, Any]:
    """What the table and --json show of a rebuild; duration in seconds once it finished."""
    finished = rebuild.HasField("finished_at")
    duration = (
        (rebuild.finished_at.ToDatetime() - rebuild.started_at.ToDatetime()).total_seconds()
        if finished
        else None
    )
    return {
        "rebuild_id": rebuild.rebuild_id,
        "state": _label(profile_pb2.RebuildState.Name(rebuild.state), "REBUILD_STATE_"),
        "events_replayed": rebuild.replayed,
        "target_sequence": rebuild.target,
        "started_at": _when(rebuild.started_at),
        "finished_at": _when(rebuild.finished_at) or None,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "requested_by": rebuild.requested_by,
        "error": rebuild.error,
    }


def _show_rebuild(rebuild: profile_pb2.Rebuild, as_json: bool, title: str) -> None:
    summary = rebuild_summary(rebuild)
    if as_json:
        render.print_json(summary)
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    styles = {"completed": "green", "failed": "red"}
    state = summary["state"]
    table.add_row("rebuild", summary["rebuild_id"])
    table.add_row("state", f"[{styles.get(state, 'yellow')}]{state}[/]")
    table.add_row("events replayed", f"{summary['events_replayed']:,}")
    table.add_row("target sequence", f"{summary['target_sequence']:,}")
    table.add_row("started", summary["started_at"])
    duration = summary["duration_seconds"]
    table.add_row("duration", f"{duration:.1f} s" if duration is not None else "running")
    table.add_row("requested by", escape(summary["requested_by"]))
    if summary["error"]:
        table.add_row("error", f"[red]{escape(summary['error'])}[/]")
    render.console.print(table)


async def _rebuild(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    started = await stub.RebuildProfiles(
        profile_pb2.RebuildProfilesRequest(reason=args.reason), metadata=creds
    )
    if args.no_wait:
        _show_rebuild(started.rebuild, args.json, "Rebuild started")
        return 0
    rebuild = await _wait_for_rebuild(
        stub, started.rebuild, creds, args.timeout, show_progress=not args.json
    )
    if rebuild.state not in _FINISHED_REBUILD and not args.json:
        render.console.print(
            f"[yellow]still running after {args.timeout:.0f} s[/]: follow it with "
            f"`tailor profile rebuild-status {rebuild.rebuild_id}`"
        )
    _show_rebuild(rebuild, args.json, "Rebuild")
    return 0 if rebuild.state == profile_pb2.REBUILD_STATE_COMPLETED else 1


async def _wait_for_rebuild(
    stub: Stub,
    rebuild: profile_pb2.Rebuild,
    creds: Metadata,
    timeout_seconds: float,
    *,
    show_progress: bool,
) -> profile_pb2.Rebuild:
    """Poll until the rebuild completes or fails, or ``timeout_seconds`` pass."""
    deadline = time.monotonic() + timeout_seconds
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=render.console,
        disable=not show_progress,
        transient=True,
    ) as bar:
        task = bar.add_task("replaying", total=rebuild.target or None)
        while rebuild.state not in _FINISHED_REBUILD and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            reply = await stub.GetRebuildStatus(
                profile_pb2.GetRebuildStatusRequest(rebuild_id=rebuild.rebuild_id), metadata=creds
            )
            rebuild = reply.rebuild
            bar.update(
                task,
                description=_label(profile_pb2.RebuildState.Name(rebuild.state), "REBUILD_STATE_"),
                completed=rebuild.replayed,
                total=max(rebuild.target, rebuild.replayed) or None,
            )
    return rebuild


async def _rebuild_status(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetRebuildStatus(
        profile_pb2.GetRebuildStatusRequest(rebuild_id=args.rebuild_id), metadata=creds
    )
    _show_rebuild(reply.rebuild, args.json, "Rebuild")
    return 0


# --- reads -----------------------------------------------------------------------------------


def computed_figures(profile: profile_pb2.Profile) -> dict[str, str]:
    """Computed traits under their condition names (``computed.orders_30d``,
    ``computed.rfm.recency``, ``computed.revenue_lifetime.amount``) as text; event counts are
    left to their own table."""
    figures: dict[str, str] = {}

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{name}.{key}", inner)
        elif isinstance(value, list) and value:
            figures[name] = ", ".join(
                f"{item.get('value', '')} ({item.get('count', 0)})"
                if isinstance(item, dict)
                else str(item)
                for item in value
            )
        elif value != "":  # unset text figures say nothing
            figures[name] = str(value)

    computed = MessageToDict(
        profile.computed,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    computed.pop("event_counts", None)
    walk("computed", computed)
    return figures


def _print_profile(profile: profile_pb2.Profile, purpose: str) -> None:
    render.console.print(
        f"[bold]profile {escape(profile.profile_id)}[/] (version {profile.version}, "
        f"first seen {_when(profile.first_seen)}, last seen {_when(profile.last_seen)}, "
        f"purpose {escape(purpose)})"
    )
    if profile.personal_omitted:
        render.console.print("[yellow]personal traits and identities left out[/]")
    traits = _table("Traits", "trait", "value", "source", "updated", "flags", "ingest source")
    traits.columns[0].min_width = max((len(t.name) for t in profile.traits), default=5)
    for trait in profile.traits:
        flags = [flag for flag in ("stale", "imputed", "personal") if getattr(trait, flag)]
        traits.add_row(
            trait.name,
            escape(_value_text(trait.value)),
            _label(profile_pb2.TraitSource.Name(trait.source), "TRAIT_SOURCE_"),
            _when(trait.updated_at),
            ", ".join(flags),
            escape(trait.source_id),
        )
    render.console.print(traits)
    figures = _table("Computed", "trait", "value")
    for name, value in computed_figures(profile).items():
        figures.add_row(name, escape(value))
    render.console.print(figures)
    if profile.computed.event_counts:
        counts = _table("Event counts", "event", "7 d", "30 d", "lifetime")
        for count in profile.computed.event_counts:
            counts.add_row(
                escape(count.event), str(count.last_7d), str(count.last_30d), str(count.lifetime)
            )
        render.console.print(counts)
    if profile.identities:
        render.console.print(f"identities: {escape(', '.join(profile.identities))}")


async def _get(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetProfile(
        profile_pb2.GetProfileRequest(
            subject_id=args.subject,
            purpose=args.purpose,
            non_personal_only=args.non_personal_only,
            trait_names=args.trait,
        ),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply.profile))
    else:
        _print_profile(reply.profile, args.purpose)
    return 0


@dataclass(frozen=True, slots=True)
class FoundProfiles:
    profiles: list[profile_pb2.Profile]
    more: bool  # further matches exist beyond the limit


async def find_profiles(
    stub: Stub,
    request: profile_pb2.FindProfilesRequest,
    limit: int,
    creds: Metadata,
) -> FoundProfiles:
    """Up to ``limit`` matching profiles, following page tokens."""
    found: list[profile_pb2.Profile] = []
    token = ""
    while True:
        request.page.CopyFrom(
            common_pb2.PageRequest(
                page_size=min(limit - len(found), MAX_PAGE_SIZE), page_token=token
            )
        )
        reply = await stub.FindProfiles(request, metadata=creds)
        found += reply.profiles
        token = reply.page.next_page_token
        if not token or len(found) >= limit:
            return FoundProfiles(found[:limit], more=bool(token))


def _trait_text(profile: profile_pb2.Profile, name: str, figures: dict[str, str]) -> str:
    if name in figures:
        return figures[name]
    return next((_value_text(t.value) for t in profile.traits if t.name == name), "")


async def _find(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    if args.limit < 1:
        raise ConditionSyntaxError("--limit must be at least 1")
    conditions = [parse_condition(text) for text in args.where]
    request = profile_pb2.FindProfilesRequest(
        conditions=conditions,
        purpose=args.purpose,
        order_by=args.order_by,
        trait_names=args.trait,
    )
    found = await find_profiles(stub, request, args.limit, creds)
    if args.json:
        render.print_json({"profiles": [_as_dict(p) for p in found.profiles], "more": found.more})
        return 0
    shown = list(dict.fromkeys([c.trait for c in conditions] + [args.order_by.split(" ")[0]]))
    shown = [name for name in shown if name]
    table = _table(
        f"{len(found.profiles)} profile(s) where {' and '.join(args.where)}",
        "profile",
        *shown,
        "last seen",
    )
    for profile in found.profiles:
        figures = computed_figures(profile)
        table.add_row(
            escape(profile.profile_id),
            *(escape(_trait_text(profile, name, figures)) for name in shown),
            _when(profile.last_seen),
        )
    render.console.print(table)
    if found.more:
        render.console.print(f"more match: raise --limit (now {args.limit}) to list them")
    return 0


async def _merges(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetMergeHistory(
        profile_pb2.GetMergeHistoryRequest(subject_id=args.subject), metadata=creds
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    if not reply.merges:
        render.console.print(f"{escape(reply.profile_id)} took part in no merge")
        return 0
    table = _table(
        f"Merges of {escape(reply.profile_id)} (oldest first)",
        "merged",
        "into",
        "reason",
        "at",
        "by",
        "note",
        "cause event",
    )
    for merge in reply.merges:
        table.add_row(
            escape(merge.merged_profile_id),
            escape(merge.surviving_profile_id),
            _label(profile_pb2.MergeReason.Name(merge.reason), "MERGE_REASON_"),
            _when(merge.merged_at),
            escape(merge.merged_by),
            escape(merge.note),
            escape(merge.cause_event_id),
        )
    render.console.print(table)
    return 0


# --- batch jobs ------------------------------------------------------------------------------


def _job_name(job: int) -> str:
    return _label(profile_pb2.BatchJob.Name(job), "BATCH_JOB_").replace("_", "-")  # type: ignore[arg-type]


def _took(run: profile_pb2.BatchJobRun) -> str:
    if not run.HasField("finished_at"):
        return ""
    return f"{(run.finished_at.ToDatetime() - run.started_at.ToDatetime()).total_seconds():.1f} s"


def _runs_table(runs: list[profile_pb2.BatchJobRun], title: str) -> Table:
    """Runs without their ids (in --json), so the table fits a narrow terminal."""
    failed = any(run.error for run in runs)
    columns = ["job", "state", "profiles", "started", "took", "trigger"]
    table = _table(title, *columns, *(["error"] if failed else []))
    for column in table.columns[:2]:  # job and state stay whole
        column.no_wrap = True
    for run in runs:
        row = [
            _job_name(run.job),
            _label(profile_pb2.JobState.Name(run.state), "JOB_STATE_"),
            f"{run.profiles_updated:,}",
            _when(run.started_at),
            _took(run),
            "on demand" if run.on_demand else "schedule",
        ]
        table.add_row(*row, *([escape(run.error)] if failed else []))
    return table


async def _run_job(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.RunBatchJob(
        profile_pb2.RunBatchJobRequest(job=JOBS[args.job]),  # type: ignore[arg-type]
        metadata=creds,
    )
    run = reply.run
    if args.wait:
        deadline = time.monotonic() + args.timeout
        with render.console.status(f"running {args.job}…", spinner="dots"):
            while run.state == profile_pb2.JOB_STATE_RUNNING and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
                runs = await stub.ListBatchJobRuns(
                    profile_pb2.ListBatchJobRunsRequest(run_id=run.run_id), metadata=creds
                )
                run = runs.runs[0]
    if args.json:
        render.print_json(_as_dict(run))
    else:
        render.console.print(_runs_table([run], f"{args.job} run"))
    failed = run.state == profile_pb2.JOB_STATE_FAILED
    unfinished = args.wait and run.state == profile_pb2.JOB_STATE_RUNNING
    return 1 if failed or unfinished else 0


async def _list_jobs(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    request = profile_pb2.ListBatchJobRunsRequest(
        job=JOBS[args.job] if args.job else profile_pb2.BATCH_JOB_UNSPECIFIED,  # type: ignore[arg-type]
        page=common_pb2.PageRequest(page_size=args.limit),
    )
    reply = await stub.ListBatchJobRuns(request, metadata=creds)
    if args.json:
        render.print_json([_as_dict(run) for run in reply.runs])
    else:
        render.console.print(_runs_table(list(reply.runs), "Batch job runs (newest first)"))
    return 0
