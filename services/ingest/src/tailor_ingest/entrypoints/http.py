"""Segment-compatible HTTP intake: ``/v1/track``, ``/v1/identify``, ``/v1/page``,
``/v1/screen``, ``/v1/group``, ``/v1/alias`` and ``/v1/batch``, with the source's API key as
the basic-auth user (Segment's write key), so existing analytics libraries send to Tailor
by changing only their host. Every event then takes the same path as over gRPC: the same
key checks, rate limit, validation, consent gate, sealing and deduplication.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import structlog
from aiohttp import web

from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor_core.errors import DomainError, ErrorCode, PermissionDenied
from tailor_ingest.api_keys import ApiKeyRegistry, Caller
from tailor_ingest.capacity import Capacity
from tailor_ingest.collector import Collector
from tailor_ingest.domain.segment_spec import KINDS, SpecError, from_segment

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # the gRPC message cap, and what Segment's batch allows
MAX_BATCH = 500
_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"success": False, "code": code, "message": message, **extra}, status=status
    )


def _write_key(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            user, _, _ = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return user
    return ""


def _outcome(result: ingest_pb2.EventResult) -> dict[str, Any]:
    outcome = ingest_pb2.EventOutcome.Name(result.outcome).removeprefix("EVENT_OUTCOME_")
    answer: dict[str, Any] = {"messageId": result.message_id, "outcome": outcome.lower()}
    issues = [
        {
            "field": issue.field,
            "reason": events_pb2.ValidationReason.Name(issue.reason),
            "description": issue.description,
        }
        for issue in result.errors
    ]
    if issues:
        answer["errors"] = issues
    if result.suppression_purpose:
        answer["purpose"] = result.suppression_purpose
    return answer


class SegmentIntake:
    def __init__(self, collector: Collector, keys: ApiKeyRegistry, capacity: Capacity) -> None:
        self._collector = collector
        self._keys = keys
        self._capacity = capacity

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        for kind in KINDS:
            app.router.add_post(f"/v1/{kind}", self._single(kind))
        app.router.add_post("/v1/batch", self._batch)
        app.router.add_post("/v1/import", self._batch)  # older libraries' name for batch
        return app

    async def _caller(self, request: web.Request) -> Caller:
        secret = _write_key(request)
        principal = await self._keys.authenticate(secret)
        if not principal.has_scope("events:write"):
            raise PermissionDenied("this key may not send events (needs events:write)")
        return await self._keys.caller(principal)

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise SpecError("", "the body is not JSON") from None

    def _single(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return await self._answer(request, kind)

        return handle

    async def _batch(self, request: web.Request) -> web.Response:
        return await self._answer(request, None)

    async def _answer(self, request: web.Request, kind: str | None) -> web.Response:
        try:
            caller = await self._caller(request)
            body = await self._body(request)
            if kind is None:
                messages = body.get("batch") if isinstance(body, dict) else None
                if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
                    raise SpecError("batch", f"must be a list of 1..{MAX_BATCH} messages")
                sent_at = body.get("sentAt")
                events = []
                for index, message in enumerate(messages):
                    if isinstance(message, dict) and sent_at and "sentAt" not in message:
                        message = {**message, "sentAt": sent_at}
                    try:
                        events.append(from_segment(message))
                    except SpecError as error:
                        raise SpecError(
                            f"batch[{index}].{error.field}".rstrip("."), error.description
                        ) from None
            else:
                events = [from_segment(body, kind)]
            self._keys.check_rate(caller, len(events))
            self._capacity.try_reserve(len(events))
            try:
                results = await self._collector.collect(caller, events, expected_kind=kind)
            finally:
                await self._capacity.release(len(events))
        except SpecError as error:
            return _error(400, "invalid_request", error.description, field=error.field)
        except DomainError as error:
            status = _STATUS.get(error.code, 500)
            response = _error(status, error.code.value.lower(), error.message)
            retry = getattr(error, "retry_after_seconds", None)
            if retry is not None:
                response.headers["Retry-After"] = str(max(1, math.ceil(retry)))
            return response
        answers = [_outcome(result) for result in results]
        if kind is not None and results[0].outcome == ingest_pb2.EVENT_OUTCOME_REJECTED:
            return _error(400, "invalid_event", "the event was rejected", results=answers)
        return web.json_response({"success": True, "results": answers})


async def start_http(intake: SegmentIntake, host: str, port: int) -> web.AppRunner:
    """Serve the intake on ``host:port``; the caller cleans the runner up at shutdown."""
    runner = web.AppRunner(intake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("segment-compatible http intake listening", port=port)
    return runner
