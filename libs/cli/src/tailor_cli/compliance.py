"""Compliance commands: consent, data-subject requests, audit; tables, or --json for scripts.

Credentials: ``TAILOR_TOKEN`` (a compliance token issued to the officer), else a token
minted from the local platform's secret (``tailor up`` on this machine). The consent
service's address: ``--consent-addr``, else ``TAILOR_CONSENT_ADDR``, else the local platform.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.table import Table

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import audit_pb2, audit_pb2_grpc, consent_pb2, consent_pb2_grpc
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor_cli import render
from tailor_cli.connection import service_address, staff_metadata
from tailor_cli.rpc_errors import print_rpc_error
from tailor_core.envelopes import timestamp

COMPLIANCE_SCOPES = [
    "consent:check",
    "consent:write",
    "consent:read",
    "consent:admin",
    "audit:read",
    "privacy:admin",
    "keys:admin",
]
SOURCES = {
    "banner": consent_pb2.CONSENT_SOURCE_BANNER,
    "app": consent_pb2.CONSENT_SOURCE_APP_SETTINGS,
    "support": consent_pb2.CONSENT_SOURCE_SUPPORT,
    "api": consent_pb2.CONSENT_SOURCE_API,
}
JURISDICTIONS = {"gdpr": consent_pb2.JURISDICTION_GDPR, "ccpa": consent_pb2.JURISDICTION_CCPA}


def add_commands(commands: Any) -> None:
    """Register ``consent``, ``dsr`` and ``audit`` on the top-level parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consent-addr", default=None, help="consent service address (host:port)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    consent = commands.add_parser("consent", help="record and inspect consent").add_subparsers(
        dest="action", required=True
    )
    for action in ("grant", "deny", "withdraw"):
        p = consent.add_parser(action, parents=[common], help=f"{action} purposes for a subject")
        p.add_argument("subject")
        p.add_argument("purposes", nargs="+")
        p.add_argument("--source", choices=sorted(SOURCES), default="support")
        p.add_argument("--jurisdiction", choices=sorted(JURISDICTIONS), default="gdpr")
        p.add_argument("--policy-version", default="")
        p.add_argument("--proof", default="", help="reference to proof kept elsewhere")
        if action == "grant":
            p.add_argument("--expires-in-days", type=int, default=None)
    show = consent.add_parser("show", parents=[common], help="current state of every purpose")
    show.add_argument("subject")
    history = consent.add_parser("history", parents=[common], help="every decision, oldest first")
    history.add_argument("subject")
    history.add_argument("--purpose", default="")
    report = consent.add_parser(
        "report", parents=[common], help="grant/withdraw rates per purpose over time"
    )
    report.add_argument("--days", type=int, default=30)
    report.add_argument("--bucket", choices=["day", "week", "month"], default="day")

    dsr = commands.add_parser("dsr", help="data-subject requests: export, erasure").add_subparsers(
        dest="action", required=True
    )
    export = dsr.add_parser(
        "export", parents=[common], help="export everything held about a subject"
    )
    export.add_argument("subject")
    export.add_argument("--reference", default="")
    export.add_argument(
        "--wait", action="store_true", help="wait for completion and print the document"
    )
    erase = dsr.add_parser(
        "erase", parents=[common], help="erase a subject everywhere (cannot be undone)"
    )
    erase.add_argument("subject")
    erase.add_argument("--reference", default="")
    erase.add_argument("--yes", action="store_true", help="confirm the erasure")
    erase.add_argument("--wait", action="store_true", help="wait for completion")
    status = dsr.add_parser("status", parents=[common], help="progress of one request")
    status.add_argument("request_id")
    listing = dsr.add_parser("list", parents=[common], help="requests, newest first")
    listing.add_argument("--state", choices=["in_progress", "completed", "stuck"], default=None)

    audit = commands.add_parser("audit", help="query and verify the audit log").add_subparsers(
        dest="action", required=True
    )
    query = audit.add_parser("query", parents=[common], help="audit entries, newest first")
    query.add_argument("--subject", default="")
    query.add_argument("--actor", default="")
    query.add_argument("--purpose", default="")
    query.add_argument("--limit", type=int, default=50)
    audit.add_parser(
        "verify", parents=[common], help="check the hash chain for edited or deleted rows"
    )


def _address(args: argparse.Namespace) -> str:
    return service_address(args.consent_addr or "", "consent", args.data_dir)


def _credentials(data_dir: Path) -> tuple[tuple[str, str], ...]:
    return staff_metadata(data_dir, COMPLIANCE_SCOPES)


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _metadata(args: argparse.Namespace) -> consent_pb2.DecisionMetadata:
    return consent_pb2.DecisionMetadata(
        source=SOURCES[args.source],
        jurisdiction=JURISDICTIONS[args.jurisdiction],
        policy_version=args.policy_version,
        proof_reference=args.proof,
    )


def _short_time(value: str) -> str:
    return value.replace("T", " ")[:19] if value else ""


async def run(args: argparse.Namespace) -> int:
    """Run one compliance command; errors print the status and the fields at fault."""
    handlers: dict[
        tuple[str, str], Callable[[grpc.aio.Channel, argparse.Namespace, Any], Awaitable[int]]
    ] = {
        ("consent", "grant"): _record,
        ("consent", "deny"): _record,
        ("consent", "withdraw"): _record,
        ("consent", "show"): _show,
        ("consent", "history"): _history,
        ("consent", "report"): _report,
        ("dsr", "export"): _dsr_request,
        ("dsr", "erase"): _dsr_request,
        ("dsr", "status"): _dsr_status,
        ("dsr", "list"): _dsr_list,
        ("audit", "query"): _audit_query,
        ("audit", "verify"): _audit_verify,
    }
    credentials = _credentials(args.data_dir)
    async with grpc.aio.insecure_channel(_address(args)) as channel:
        try:
            return await handlers[(args.command, args.action)](channel, args, credentials)
        except grpc.aio.AioRpcError as error:
            print_rpc_error(error, args.json)
            return 1


async def _record(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    meta = _metadata(args)
    if args.action == "grant":
        request = consent_pb2.GrantConsentRequest(
            subject_id=args.subject, purposes=args.purposes, metadata=meta
        )
        if args.expires_in_days:
            request.expires_at.CopyFrom(
                timestamp(datetime.now(UTC) + timedelta(days=args.expires_in_days))
            )
        reply = await stub.GrantConsent(request, metadata=creds)
    elif args.action == "deny":
        reply = await stub.DenyConsent(
            consent_pb2.DenyConsentRequest(
                subject_id=args.subject, purposes=args.purposes, metadata=meta
            ),
            metadata=creds,
        )
    else:
        reply = await stub.WithdrawConsent(
            consent_pb2.WithdrawConsentRequest(
                subject_id=args.subject, purposes=args.purposes, metadata=meta
            ),
            metadata=creds,
        )
    if args.json:
        render.print_json(_as_dict(reply))
    else:
        render.console.print(
            f"recorded {len(reply.decisions)} decision(s) for {args.subject}: "
            f"{args.action} {', '.join(args.purposes)}"
        )
    return 0


async def _show(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    reply = await consent_pb2_grpc.ConsentServiceStub(channel).GetConsent(
        consent_pb2.GetConsentRequest(subject_id=args.subject), metadata=creds
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    table = Table(title=f"Consent of {args.subject}", title_justify="left")
    for column in ("purpose", "allowed", "why", "decided", "source", "expires"):
        table.add_column(column)
    for state in reply.purposes:
        decision = _as_dict(state.decision) if state.HasField("decision") else {}
        why = (
            "default"
            if state.is_default
            else consent_pb2.DecisionKind.Name(state.decision.kind)
            .removeprefix("DECISION_KIND_")
            .lower()
        )
        table.add_row(
            state.purpose,
            "[green]yes[/]" if state.allowed else "[red]no[/]",
            why if decision or state.is_default else ("always" if state.allowed else ""),
            _short_time(decision.get("metadata", {}).get("decided_at", "")),
            decision.get("metadata", {}).get("source", "").removeprefix("CONSENT_SOURCE_").lower(),
            _short_time(decision.get("expires_at", "")),
        )
    render.console.print(table)
    return 0


async def _history(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    decisions: list[consent_pb2.ConsentDecision] = []
    token = ""
    while True:
        page = await stub.GetConsentHistory(
            consent_pb2.GetConsentHistoryRequest(
                subject_id=args.subject,
                purpose=args.purpose,
                page=common_pb2.PageRequest(page_size=500, page_token=token),
            ),
            metadata=creds,
        )
        decisions += page.decisions
        token = page.page.next_page_token
        if not token:
            break
    if args.json:
        render.print_json([_as_dict(d) for d in decisions])
        return 0
    table = Table(title=f"Consent history of {args.subject}", title_justify="left")
    for column in ("decided", "purpose", "decision", "source", "jurisdiction", "policy"):
        table.add_column(column)
    for d in decisions:
        row = _as_dict(d)
        table.add_row(
            _short_time(row.get("metadata", {}).get("decided_at", "")),
            d.purpose,
            consent_pb2.DecisionKind.Name(d.kind).removeprefix("DECISION_KIND_").lower(),
            row.get("metadata", {}).get("source", "").removeprefix("CONSENT_SOURCE_").lower(),
            row.get("metadata", {})
            .get("jurisdiction", "gdpr")
            .removeprefix("JURISDICTION_")
            .lower(),
            d.metadata.policy_version,
        )
    render.console.print(table)
    return 0


async def _report(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    end = datetime.now(UTC) + timedelta(seconds=1)
    request = consent_pb2.GetConsentReportRequest(bucket=args.bucket)
    request.range.start.CopyFrom(timestamp(end - timedelta(days=args.days)))
    request.range.end.CopyFrom(timestamp(end))
    reply = await consent_pb2_grpc.ConsentServiceStub(channel).GetConsentReport(
        request, metadata=creds
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    table = Table(
        title=f"Consent decisions per {args.bucket}, last {args.days} days", title_justify="left"
    )
    for column in ("period", "purpose", "grants", "denials", "withdrawals", "grant rate"):
        table.add_column(column, justify="right" if column not in ("period", "purpose") else "left")
    for row in reply.rows:
        table.add_row(
            row.bucket_start.ToDatetime().date().isoformat(),
            row.purpose,
            str(row.grants),
            str(row.denials),
            str(row.withdrawals),
            f"{row.grant_rate:.0%}",
        )
    render.console.print(table)
    return 0


def _request_table(requests: list[privacy_pb2.PrivacyRequest], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("request", "kind", "subject", "state", "steps done", "created", "completed"):
        table.add_column(column)
    for r in requests:
        done = sum(1 for s in r.steps if s.state == 2)
        row = _as_dict(r)
        table.add_row(
            r.request_id,
            "export" if r.kind == 1 else "erase",
            r.subject_id if len(r.subject_id) < 40 else r.subject_id[:12] + "…",
            privacy_pb2.RequestState.Name(r.state).removeprefix("REQUEST_STATE_").lower(),
            f"{done}/{len(r.steps)}",
            _short_time(row.get("created_at", "")),
            _short_time(row.get("completed_at", "")),
        )
    return table


async def _dsr_request(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    stub = privacy_pb2_grpc.PrivacyServiceStub(channel)
    if args.action == "erase":
        if not args.yes:
            render.console.print("[red]erasure cannot be undone[/]: add --yes to confirm")
            return 2
        reply = await stub.RequestErasure(
            privacy_pb2.RequestErasureRequest(
                subject_id=args.subject, reference=args.reference, confirm=True
            ),
            metadata=creds,
        )
    else:
        reply = await stub.RequestExport(
            privacy_pb2.RequestExportRequest(subject_id=args.subject, reference=args.reference),
            metadata=creds,
        )
    if args.wait:
        with render.console.status(f"waiting for {len(reply.steps)} services…", spinner="dots"):
            deadline = time.monotonic() + 300
            while (
                reply.state != privacy_pb2.REQUEST_STATE_COMPLETED and time.monotonic() < deadline
            ):
                await _pause()
                reply = await stub.GetPrivacyRequest(
                    privacy_pb2.GetPrivacyRequestRequest(request_id=reply.request_id),
                    metadata=creds,
                )
        if args.action == "export" and reply.state == privacy_pb2.REQUEST_STATE_COMPLETED:
            document = await stub.GetExportDocument(
                privacy_pb2.GetExportDocumentRequest(request_id=reply.request_id), metadata=creds
            )
            print(json.dumps(json.loads(document.document_json), indent=2))
            return 0
    if args.json:
        render.print_json(_as_dict(reply))
    else:
        render.console.print(_request_table([reply], f"{args.action} requested"))
    return 0 if (not args.wait or reply.state == privacy_pb2.REQUEST_STATE_COMPLETED) else 1


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.5)


async def _dsr_status(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    reply = await privacy_pb2_grpc.PrivacyServiceStub(channel).GetPrivacyRequest(
        privacy_pb2.GetPrivacyRequestRequest(request_id=args.request_id), metadata=creds
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    render.console.print(_request_table([reply], "Data-subject request"))
    steps = Table(title="Steps", title_justify="left")
    for column in ("service", "state", "attempts", "updated", "rows", "error"):
        steps.add_column(column)
    for step in reply.steps:
        steps.add_row(
            step.service,
            ["", "started", "completed", "failed"][step.state]
            if step.state < 4
            else str(step.state),
            str(step.attempts),
            _short_time(_as_dict(step).get("updated_at", "")),
            ", ".join(f"{k}={v}" for k, v in sorted(step.counts.items())),
            step.error,
        )
    render.console.print(steps)
    return 0


async def _dsr_list(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    states = {
        "in_progress": privacy_pb2.REQUEST_STATE_IN_PROGRESS,
        "completed": privacy_pb2.REQUEST_STATE_COMPLETED,
        "stuck": privacy_pb2.REQUEST_STATE_STUCK,
    }
    wanted = states.get(args.state or "", privacy_pb2.REQUEST_STATE_UNSPECIFIED)
    reply = await privacy_pb2_grpc.PrivacyServiceStub(channel).ListPrivacyRequests(
        privacy_pb2.ListPrivacyRequestsRequest(state=wanted),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply))
    else:
        render.console.print(_request_table(list(reply.requests), "Data-subject requests"))
    return 0


async def _audit_query(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    reply = await audit_pb2_grpc.AuditServiceStub(channel).QueryAudit(
        audit_pb2.QueryAuditRequest(
            subject_id=args.subject,
            actor=args.actor,
            purpose=args.purpose,
            page=common_pb2.PageRequest(page_size=args.limit),
        ),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    table = Table(title="Audit log (newest first)", title_justify="left")
    for column in ("#", "at", "action", "actor", "purpose", "request", "details"):
        table.add_column(column)
    for e in reply.entries:
        table.add_row(
            str(e.sequence),
            _short_time(_as_dict(e).get("at", "")),
            audit_pb2.AuditAction.Name(e.action).removeprefix("AUDIT_ACTION_").lower(),
            e.actor,
            e.purpose,
            e.request_id[:8],
            json.dumps(MessageToDict(e.details), sort_keys=True)[:60],
        )
    render.console.print(table)
    return 0


async def _audit_verify(channel: grpc.aio.Channel, args: argparse.Namespace, creds: Any) -> int:
    reply = await audit_pb2_grpc.AuditServiceStub(channel).VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(), metadata=creds
    )
    if args.json:
        render.print_json(_as_dict(reply) | {"intact": reply.intact})
    elif reply.intact:
        render.console.print(f"[green]audit chain intact[/]: {reply.checked} entries verified")
    else:
        render.console.print(
            f"[red]audit chain broken[/] at entry {reply.first_broken_sequence}: "
            f"{reply.problem} ({reply.checked} verified before it)"
        )
    return 0 if reply.intact else 1
