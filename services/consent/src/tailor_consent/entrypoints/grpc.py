"""Thin gRPC servicers: check and convert the request, call the ledger, convert the result."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict

from tailor.consent.v1 import audit_pb2, audit_pb2_grpc, consent_pb2_grpc, keys_pb2, keys_pb2_grpc
from tailor.consent.v1 import consent_pb2 as pb
from tailor.events.v1 import platform_events_pb2 as events_pb2
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor_consent.adapters import audit
from tailor_consent.domain.ledger import DecisionKind, Purpose, RecordCommand
from tailor_consent.entrypoints import convert
from tailor_consent.key_service import KEY_CACHE_TTL_SECONDS, KeyService
from tailor_consent.ledger_service import ConsentLedger
from tailor_consent.privacy_service import KINDS, PrivacyWorkflows, RequestView
from tailor_core.crypto import DataKey
from tailor_core.envelopes import timestamp
from tailor_core.errors import FieldViolation, InvalidArgument, PermissionDenied
from tailor_core.interceptors import current_principal
from tailor_core.paging import page_size

CHECK_CACHE_TTL_SECONDS = 60


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(self, ledger: ConsentLedger) -> None:
        self._ledger = ledger

    async def _record(
        self,
        request: pb.GrantConsentRequest | pb.DenyConsentRequest | pb.WithdrawConsentRequest,
        kind: DecisionKind,
    ) -> pb.RecordConsentResponse:
        meta, decided_at = convert.metadata(request.metadata, request.HasField("metadata"))
        expires_at = None
        if isinstance(request, pb.GrantConsentRequest) and request.HasField("expires_at"):
            expires_at = convert.utc(request.expires_at, "expires_at")
        command = RecordCommand(
            subject_id=request.subject_id,
            purposes=list(request.purposes),
            kind=kind,
            metadata=meta,
            decided_at=decided_at,
            expires_at=expires_at,
        )
        stored = await self._ledger.record(command, actor=current_principal().id)
        return pb.RecordConsentResponse(decisions=[convert.decision(d) for d in stored])

    async def GrantConsent(
        self, request: pb.GrantConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordConsentResponse:
        return await self._record(request, DecisionKind.GRANTED)

    async def DenyConsent(
        self, request: pb.DenyConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordConsentResponse:
        return await self._record(request, DecisionKind.DENIED)

    async def WithdrawConsent(
        self, request: pb.WithdrawConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordConsentResponse:
        return await self._record(request, DecisionKind.WITHDRAWN)

    async def GetConsent(
        self, request: pb.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentResponse:
        states = await self._ledger.state(request.subject_id)
        return pb.GetConsentResponse(
            subject_id=request.subject_id, purposes=[convert.purpose_state(s) for s in states]
        )

    async def GetConsentHistory(
        self, request: pb.GetConsentHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentHistoryResponse:
        page = await self._ledger.history(
            request.subject_id, request.purpose, request.page.page_size, request.page.page_token
        )
        response = pb.GetConsentHistoryResponse(
            decisions=[convert.decision(d) for d in page.decisions]
        )
        response.page.next_page_token = page.next_page_token
        response.page.total_size = -1
        return response

    async def CheckConsent(
        self, request: pb.CheckConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckConsentResponse:
        state = await self._ledger.check(request.subject_id, request.purpose)
        return pb.CheckConsentResponse(
            allowed=state.allowed, reason=state.reason, cache_ttl_seconds=CHECK_CACHE_TTL_SECONDS
        )

    async def BatchCheckConsent(
        self, request: pb.BatchCheckConsentRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchCheckConsentResponse:
        states = await self._ledger.check_many([(c.subject_id, c.purpose) for c in request.checks])
        return pb.BatchCheckConsentResponse(
            results=[
                pb.CheckConsentResponse(
                    allowed=s.allowed, reason=s.reason, cache_ttl_seconds=CHECK_CACHE_TTL_SECONDS
                )
                for s in states
            ]
        )

    async def ListPurposes(
        self, request: pb.ListPurposesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPurposesResponse:
        registry = await self._ledger.purposes()
        return pb.ListPurposesResponse(purposes=[convert.purpose(p) for p in registry.values()])

    async def UpsertPurpose(
        self, request: pb.UpsertPurposeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Purpose:
        given = request.purpose
        stored = await self._ledger.upsert_purpose(
            Purpose(given.name, given.description, allowed_services=tuple(given.allowed_services)),
            actor=current_principal().id,
        )
        return convert.purpose(stored)

    async def GetConsentReport(
        self, request: pb.GetConsentReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsentReportResponse:
        if not (request.range.HasField("start") and request.range.HasField("end")):
            raise InvalidArgument(
                "report needs a period", [FieldViolation("range", "give start and end", "REQUIRED")]
            )
        rows = await self._ledger.report(
            convert.utc(request.range.start, "range.start"),
            convert.utc(request.range.end, "range.end"),
            request.bucket or "day",
            list(request.purposes),
        )
        return pb.GetConsentReportResponse(
            rows=[
                pb.ConsentReportRow(
                    bucket_start=timestamp(row["bucket_start"]),
                    purpose=row["purpose"],
                    grants=row["grants"],
                    denials=row["denials"],
                    withdrawals=row["withdrawals"],
                    grant_rate=row["grant_rate"],
                )
                for row in rows
            ]
        )


_ACTIONS = {
    audit_pb2.AUDIT_ACTION_CONSENT_RECORDED: "consent_recorded",
    audit_pb2.AUDIT_ACTION_KEY_GRANTED: "key_granted",
    audit_pb2.AUDIT_ACTION_KEY_REFUSED: "key_refused",
    audit_pb2.AUDIT_ACTION_EXPORT_STEP: "export_step",
    audit_pb2.AUDIT_ACTION_ERASURE_STEP: "erasure_step",
    audit_pb2.AUDIT_ACTION_PURPOSE_CHANGED: "purpose_changed",
    audit_pb2.AUDIT_ACTION_MASTER_KEY_ROTATED: "master_key_rotated",
    audit_pb2.AUDIT_ACTION_IDENTITY_MERGED: "identity_merged",
}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def QueryAudit(
        self, request: audit_pb2.QueryAuditRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.QueryAuditResponse:
        before = None
        if request.page.page_token:
            token = request.page.page_token
            # isdigit() alone admits "²" (which int() refuses) and numbers past bigint.
            if not (token.isascii() and token.isdigit() and len(token) <= 18):
                raise InvalidArgument(
                    "bad page token",
                    [FieldViolation("page.page_token", "not a token from this API", "BAD_TOKEN")],
                )
            before = int(request.page.page_token)
        has = request.range.HasField
        start = convert.utc(request.range.start, "range.start") if has("start") else None
        end = convert.utc(request.range.end, "range.end") if has("end") else None
        if start and end and end <= start:
            raise InvalidArgument(
                "bad period", [FieldViolation("range", "end must be after start", "BAD_RANGE")]
            )
        size = page_size(request.page, 100, 1000)
        async with self._pool.acquire() as conn:
            entries = await audit.query(
                conn,
                subject_id=request.subject_id,
                actor=request.actor,
                purpose=request.purpose,
                actions=[_ACTIONS[a] for a in request.actions if a in _ACTIONS],
                start=start,
                end=end,
                before_sequence=before,
                limit=size,
            )
        response = audit_pb2.QueryAuditResponse()
        for entry in entries:
            details = struct_pb2.Struct()
            ParseDict(dict(entry.details), details)
            response.entries.append(
                audit_pb2.AuditEntry(
                    sequence=entry.sequence,
                    at=timestamp(entry.at),
                    action=_ACTIONS_BACK.get(entry.action, audit_pb2.AUDIT_ACTION_UNSPECIFIED),
                    actor=entry.actor,
                    subject_id=entry.subject_token,
                    purpose=entry.purpose,
                    request_id=entry.request_id,
                    details=details,
                    hash=entry.hash,
                )
            )
        if len(entries) == size:
            response.page.next_page_token = str(entries[-1].sequence)
        response.page.total_size = -1
        return response

    async def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        violations = [
            FieldViolation(name, f"0 (the {end}) or a positive sequence", "NEGATIVE")
            for name, end in (("from_sequence", "start"), ("to_sequence", "end"))
            if getattr(request, name) < 0
        ]
        if violations:
            raise InvalidArgument("bad sequence range", violations)
        async with self._pool.acquire() as conn:
            result = await audit.verify(conn, request.from_sequence, request.to_sequence)
        return audit_pb2.VerifyAuditChainResponse(
            intact=result.intact,
            checked=result.checked,
            first_broken_sequence=result.first_broken_sequence,
            problem=result.problem,
        )


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    @staticmethod
    def _reply(key: DataKey) -> keys_pb2.DataKey:
        return keys_pb2.DataKey(
            key_id=key.key_id, key=key.material, cache_ttl_seconds=KEY_CACHE_TTL_SECONDS
        )

    async def GetEncryptionKey(
        self, request: keys_pb2.GetEncryptionKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.DataKey:
        return self._reply(await self._keys.encryption_key(request.subject_id, current_principal()))

    async def GetDecryptionKey(
        self, request: keys_pb2.GetDecryptionKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.DataKey:
        key = await self._keys.decryption_key(
            request.subject_id, request.purpose, request.key_id, current_principal()
        )
        return self._reply(key)

    async def RotateMasterKey(
        self, request: keys_pb2.RotateMasterKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.RotateMasterKeyResponse:
        rewrapped = await self._keys.rotate(request.new_master_key_id, current_principal())
        return keys_pb2.RotateMasterKeyResponse(
            rewrapped=rewrapped, master_key_id=self._keys.current_master_key_id
        )


_STATES = {
    "in_progress": privacy_pb2.REQUEST_STATE_IN_PROGRESS,
    "completed": privacy_pb2.REQUEST_STATE_COMPLETED,
    "stuck": privacy_pb2.REQUEST_STATE_STUCK,
}
_STATES_BACK = {v: k for k, v in _STATES.items()}
_STEP_STATES = {
    "pending": events_pb2.PRIVACY_STEP_STATE_STARTED,
    "completed": events_pb2.PRIVACY_STEP_STATE_COMPLETED,
    "failed": events_pb2.PRIVACY_STEP_STATE_FAILED,
}


def _request_message(view: RequestView) -> privacy_pb2.PrivacyRequest:
    message = privacy_pb2.PrivacyRequest(
        request_id=view.request_id,
        kind=KINDS[view.kind],
        subject_id=view.subject,
        state=_STATES[view.state],
        created_at=timestamp(view.created_at),
        reference=view.reference,
        requested_by=view.requested_by,
        steps=[
            privacy_pb2.ServiceStep(
                service=step.service,
                state=_STEP_STATES[step.state],
                attempts=step.attempts,
                updated_at=timestamp(step.updated_at),
                error=step.error,
                counts=step.counts,
            )
            for step in view.steps
        ],
    )
    if view.completed_at is not None:
        message.completed_at.CopyFrom(timestamp(view.completed_at))
    return message


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, workflows: PrivacyWorkflows, pool: asyncpg.Pool) -> None:
        self._workflows = workflows
        self._pool = pool

    async def RequestExport(
        self, request: privacy_pb2.RequestExportRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.PrivacyRequest:
        view = await self._workflows.request(
            "export",
            request.subject_id,
            request.idempotency_key,
            request.reference,
            current_principal().id,
        )
        return _request_message(view)

    async def RequestErasure(
        self, request: privacy_pb2.RequestErasureRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.PrivacyRequest:
        if not request.confirm:
            raise InvalidArgument(
                "erasure cannot be undone",
                [FieldViolation("confirm", "set confirm = true to erase", "CONFIRMATION_REQUIRED")],
            )
        view = await self._workflows.request(
            "erase",
            request.subject_id,
            request.idempotency_key,
            request.reference,
            current_principal().id,
        )
        return _request_message(view)

    async def GetPrivacyRequest(
        self, request: privacy_pb2.GetPrivacyRequestRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.PrivacyRequest:
        return _request_message(await self._workflows.get(request.request_id))

    async def ListPrivacyRequests(
        self, request: privacy_pb2.ListPrivacyRequestsRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ListPrivacyRequestsResponse:
        before = None
        if request.page.page_token:
            try:
                before = datetime.fromisoformat(request.page.page_token)
            except ValueError:
                raise InvalidArgument(
                    "bad page token",
                    [FieldViolation("page.page_token", "not a token from this API", "BAD_TOKEN")],
                ) from None
        size = min(request.page.page_size or 50, 500)
        views = await self._workflows.list(
            _STATES_BACK.get(request.state, ""), request.subject_id, size, before
        )
        response = privacy_pb2.ListPrivacyRequestsResponse(
            requests=[_request_message(v) for v in views]
        )
        if len(views) == size:
            response.page.next_page_token = views[-1].created_at.isoformat()
        response.page.total_size = -1
        return response

    async def GetExportDocument(
        self, request: privacy_pb2.GetExportDocumentRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.GetExportDocumentResponse:
        return privacy_pb2.GetExportDocumentResponse(
            document_json=await self._workflows.document(request.request_id)
        )

    async def ReportStep(
        self, request: privacy_pb2.ReportStepRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ReportStepResponse:
        caller = current_principal()
        if request.step.service != caller.id:
            raise PermissionDenied("a service reports only its own step")
        async with self._pool.acquire() as conn, conn.transaction():
            state = await self._workflows.apply_report(conn, request.step)
        return privacy_pb2.ReportStepResponse(state=_STATES[state])

    async def ListDataHolders(
        self, request: privacy_pb2.ListDataHoldersRequest, context: grpc.aio.ServicerContext
    ) -> privacy_pb2.ListDataHoldersResponse:
        return privacy_pb2.ListDataHoldersResponse(services=self._workflows.holders)
