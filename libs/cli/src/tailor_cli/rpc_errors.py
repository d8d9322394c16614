"""gRPC failures printed for people (or as JSON): the status code, the message, the fields at
fault (``google.rpc.BadRequest``) and the machine reason (``google.rpc.ErrorInfo``)."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.markup import escape

from tailor_cli import render


def describe(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """``{"error": CODE, "message", "fields": [{field, reason, description}], "reason",
    "metadata"}``; reason and metadata come from an ErrorInfo detail, empty without one."""
    fields: list[dict[str, str]] = []
    reason = ""
    metadata: dict[str, str] = {}
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(bad_request):
            fields += [
                {"field": v.field, "reason": v.reason, "description": v.description}
                for v in bad_request.field_violations
            ]
        elif detail.Unpack(info):
            reason = info.reason
            metadata = dict(info.metadata)
    code = error.code().name if error.code() else "UNKNOWN"
    return {
        "error": code,
        "message": error.details() or "",
        "fields": fields,
        "reason": reason,
        "metadata": metadata,
    }


def print_rpc_error(error: grpc.aio.AioRpcError, as_json: bool) -> None:
    described = describe(error)
    if as_json:
        render.print_json(described)
        return
    render.console.print(f"[red]{described['error']}[/]: {escape(described['message'])}")
    if described["reason"]:
        context = ", ".join(f"{k}={v}" for k, v in sorted(described["metadata"].items()))
        line = f"  reason: {described['reason']}" + (f" ({context})" if context else "")
        render.console.print(escape(line))
    for field in described["fields"]:
        line = f"  {field['field']}: {field['description']} ({field['reason']})"
        render.console.print(escape(line))
