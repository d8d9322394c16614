"""Consent decisions, checks, the purpose registry, reports and data-subject requests, for
apps and compliance staff (``tailor.consent.v1.ConsentService`` and
``tailor.privacy.v1.PrivacyService``, both on the consent service, ``127.0.0.1:50051`` by
default).

Scopes: ``consent:write`` to record decisions, ``consent:read`` to read state and history,
``consent:check`` to check and list purposes, ``consent:admin`` to change purposes,
``audit:read`` for reports, ``privacy:admin`` for data-subject requests. Treat any error of a
check as a denial (fail closed).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor_client.service_client import AsyncServiceClient, SyncServiceClient, page, timestamp

ConsentSource: TypeAlias = consent_pb2.ConsentSource.ValueType
Jurisdiction: TypeAlias = consent_pb2.Jurisdiction.ValueType
RequestState: TypeAlias = privacy_pb2.RequestState.ValueType


def _decision(
    source: ConsentSource,
    jurisdiction: Jurisdiction,
    policy_version: str,
    proof_reference: str,
    decided_at: datetime | None,
) -> consent_pb2.DecisionMetadata:
    metadata = consent_pb2.DecisionMetadata(
        source=source,
        jurisdiction=jurisdiction,
        policy_version=policy_version,
        proof_reference=proof_reference,
    )
    if decided_at is not None:
        metadata.decided_at.CopyFrom(timestamp(decided_at))
    return metadata


class AsyncConsentClient(AsyncServiceClient):
    """The consent ledger and data-subject requests from asyncio code. Decisions default to
    ``source=CONSENT_SOURCE_API`` and the platform's jurisdiction (GDPR)."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(target, token, **options)
        self._consent = consent_pb2_grpc.ConsentServiceStub(self._channel)
        self._privacy = privacy_pb2_grpc.PrivacyServiceStub(self._channel)

    # --- decisions (consent:write) ---------------------------------------------------------

    async def grant_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        """Record grants of ``purposes``; one ledger entry per purpose, in order. After
        ``expires_at`` a grant counts as denied."""
        request = consent_pb2.GrantConsentRequest(
            subject_id=subject_id,
            purposes=purposes,
            metadata=_decision(source, jurisdiction, policy_version, proof_reference, decided_at),
        )
        if expires_at is not None:
            request.expires_at.CopyFrom(timestamp(expires_at))
        reply: consent_pb2.RecordConsentResponse = await self._call(
            self._consent.GrantConsent, request, idempotent=False
        )
        return list(reply.decisions)

    async def deny_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        """Record explicit denials (the subject said no before ever saying yes)."""
        reply: consent_pb2.RecordConsentResponse = await self._call(
            self._consent.DenyConsent,
            consent_pb2.DenyConsentRequest(
                subject_id=subject_id,
                purposes=purposes,
                metadata=_decision(
                    source, jurisdiction, policy_version, proof_reference, decided_at
                ),
            ),
            idempotent=False,
        )
        return list(reply.decisions)

    async def withdraw_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        """Withdraw earlier grants; every service stops using the data within a second."""
        reply: consent_pb2.RecordConsentResponse = await self._call(
            self._consent.WithdrawConsent,
            consent_pb2.WithdrawConsentRequest(
                subject_id=subject_id,
                purposes=purposes,
                metadata=_decision(
                    source, jurisdiction, policy_version, proof_reference, decided_at
                ),
            ),
            idempotent=False,
        )
        return list(reply.decisions)

    # --- state and history (consent:read) --------------------------------------------------

    async def get_consent(self, subject_id: str) -> consent_pb2.GetConsentResponse:
        """The current state of every registered purpose (defaults marked ``is_default``)."""
        reply: consent_pb2.GetConsentResponse = await self._call(
            self._consent.GetConsent, consent_pb2.GetConsentRequest(subject_id=subject_id)
        )
        return reply

    async def get_consent_history(
        self, subject_id: str, *, purpose: str = "", page_size: int = 0, page_token: str = ""
    ) -> consent_pb2.GetConsentHistoryResponse:
        """Every decision recorded for the subject, oldest first (100 a page by default)."""
        reply: consent_pb2.GetConsentHistoryResponse = await self._call(
            self._consent.GetConsentHistory,
            consent_pb2.GetConsentHistoryRequest(
                subject_id=subject_id, purpose=purpose, page=page(page_size, page_token)
            ),
        )
        return reply

    # --- checks and purposes (consent:check, consent:admin) --------------------------------

    async def check_consent(
        self, subject_id: str, purpose: str
    ) -> consent_pb2.CheckConsentResponse:
        """Whether the subject may be processed for ``purpose`` now, and why
        (``"granted"``, ``"withdrawn"``, ``"default_gdpr"``…)."""
        reply: consent_pb2.CheckConsentResponse = await self._call(
            self._consent.CheckConsent,
            consent_pb2.CheckConsentRequest(subject_id=subject_id, purpose=purpose),
        )
        return reply

    async def batch_check_consent(
        self, checks: Sequence[tuple[str, str]]
    ) -> list[consent_pb2.CheckConsentResponse]:
        """Check up to 1000 ``(subject_id, purpose)`` pairs; answers in the same order."""
        reply: consent_pb2.BatchCheckConsentResponse = await self._call(
            self._consent.BatchCheckConsent,
            consent_pb2.BatchCheckConsentRequest(
                checks=[
                    consent_pb2.CheckConsentRequest(subject_id=subject, purpose=purpose)
                    for subject, purpose in checks
                ]
            ),
        )
        return list(reply.results)

    async def list_purposes(self) -> list[consent_pb2.Purpose]:
        """The purpose registry: built-in purposes first, then by name."""
        reply: consent_pb2.ListPurposesResponse = await self._call(
            self._consent.ListPurposes, consent_pb2.ListPurposesRequest()
        )
        return list(reply.purposes)

    async def upsert_purpose(
        self, name: str, *, description: str = "", allowed_services: Sequence[str] = ()
    ) -> consent_pb2.Purpose:
        """Add or change a custom purpose (lower-case letters, digits and ``_``)."""
        reply: consent_pb2.Purpose = await self._call(
            self._consent.UpsertPurpose,
            consent_pb2.UpsertPurposeRequest(
                purpose=consent_pb2.Purpose(
                    name=name, description=description, allowed_services=allowed_services
                )
            ),
        )
        return reply

    async def get_consent_report(
        self,
        *,
        start: datetime,
        end: datetime,
        bucket: str = "day",
        purposes: Sequence[str] = (),
    ) -> list[consent_pb2.ConsentReportRow]:
        """Grant, denial and withdrawal counts per purpose and ``bucket`` (``"day"``,
        ``"week"``, ``"month"``) from ``start`` up to ``end``; needs ``audit:read``."""
        reply: consent_pb2.GetConsentReportResponse = await self._call(
            self._consent.GetConsentReport,
            consent_pb2.GetConsentReportRequest(
                range=common_pb2.TimeRange(start=timestamp(start), end=timestamp(end)),
                bucket=bucket,
                purposes=purposes,
            ),
        )
        return list(reply.rows)

    # --- data-subject requests (privacy:admin) ---------------------------------------------

    async def request_export(
        self, subject_id: str, *, reference: str = "", idempotency_key: str = ""
    ) -> privacy_pb2.PrivacyRequest:
        """Start exporting everything held about the subject. Without an
        ``idempotency_key`` one is made up, so a retried call starts one request only."""
        reply: privacy_pb2.PrivacyRequest = await self._call(
            self._privacy.RequestExport,
            privacy_pb2.RequestExportRequest(
                subject_id=subject_id,
                reference=reference,
                idempotency_key=idempotency_key or str(uuid.uuid4()),
            ),
        )
        return reply

    async def request_erasure(
        self,
        subject_id: str,
        *,
        confirm: bool,
        reference: str = "",
        idempotency_key: str = "",
    ) -> privacy_pb2.PrivacyRequest:
        """Start erasing the subject everywhere; ``confirm=True`` is required, since it
        cannot be undone. ``idempotency_key`` as for :meth:`request_export`."""
        reply: privacy_pb2.PrivacyRequest = await self._call(
            self._privacy.RequestErasure,
            privacy_pb2.RequestErasureRequest(
                subject_id=subject_id,
                confirm=confirm,
                reference=reference,
                idempotency_key=idempotency_key or str(uuid.uuid4()),
            ),
        )
        return reply

    async def get_privacy_request(self, request_id: str) -> privacy_pb2.PrivacyRequest:
        """A data-subject request with each data holder's step."""
        reply: privacy_pb2.PrivacyRequest = await self._call(
            self._privacy.GetPrivacyRequest,
            privacy_pb2.GetPrivacyRequestRequest(request_id=request_id),
        )
        return reply

    async def list_privacy_requests(
        self,
        *,
        state: RequestState = privacy_pb2.REQUEST_STATE_UNSPECIFIED,
        subject_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> privacy_pb2.ListPrivacyRequestsResponse:
        """Data-subject requests, newest first, optionally of one state or subject."""
        reply: privacy_pb2.ListPrivacyRequestsResponse = await self._call(
            self._privacy.ListPrivacyRequests,
            privacy_pb2.ListPrivacyRequestsRequest(
                state=state, subject_id=subject_id, page=page(page_size, page_token)
            ),
        )
        return reply

    async def get_export_document(self, request_id: str) -> dict[str, Any]:
        """A completed export, parsed: ``{"subject_id": …, "services": {"profile": …}}``."""
        reply: privacy_pb2.GetExportDocumentResponse = await self._call(
            self._privacy.GetExportDocument,
            privacy_pb2.GetExportDocumentRequest(request_id=request_id),
        )
        document: dict[str, Any] = json.loads(reply.document_json)
        return document

    async def list_data_holders(self) -> list[str]:
        """The services that must confirm every data-subject request."""
        reply: privacy_pb2.ListDataHoldersResponse = await self._call(
            self._privacy.ListDataHolders, privacy_pb2.ListDataHoldersRequest()
        )
        return list(reply.services)


class ConsentClient(SyncServiceClient[AsyncConsentClient]):
    """The consent ledger and data-subject requests from code without an event loop; the
    same methods as :class:`AsyncConsentClient`, blocking."""

    def __init__(self, target: str, token: str, **options: Any) -> None:
        super().__init__(lambda: AsyncConsentClient(target, token, **options))

    def grant_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        return self._run(
            self._client.grant_consent(
                subject_id,
                purposes,
                source=source,
                jurisdiction=jurisdiction,
                policy_version=policy_version,
                proof_reference=proof_reference,
                decided_at=decided_at,
                expires_at=expires_at,
            )
        )

    def deny_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        return self._run(
            self._client.deny_consent(
                subject_id,
                purposes,
                source=source,
                jurisdiction=jurisdiction,
                policy_version=policy_version,
                proof_reference=proof_reference,
                decided_at=decided_at,
            )
        )

    def withdraw_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        *,
        source: ConsentSource = consent_pb2.CONSENT_SOURCE_API,
        jurisdiction: Jurisdiction = consent_pb2.JURISDICTION_UNSPECIFIED,
        policy_version: str = "",
        proof_reference: str = "",
        decided_at: datetime | None = None,
    ) -> list[consent_pb2.ConsentDecision]:
        return self._run(
            self._client.withdraw_consent(
                subject_id,
                purposes,
                source=source,
                jurisdiction=jurisdiction,
                policy_version=policy_version,
                proof_reference=proof_reference,
                decided_at=decided_at,
            )
        )

    def get_consent(self, subject_id: str) -> consent_pb2.GetConsentResponse:
        return self._run(self._client.get_consent(subject_id))

    def get_consent_history(
        self, subject_id: str, *, purpose: str = "", page_size: int = 0, page_token: str = ""
    ) -> consent_pb2.GetConsentHistoryResponse:
        return self._run(
            self._client.get_consent_history(
                subject_id, purpose=purpose, page_size=page_size, page_token=page_token
            )
        )

    def check_consent(self, subject_id: str, purpose: str) -> consent_pb2.CheckConsentResponse:
        return self._run(self._client.check_consent(subject_id, purpose))

    def batch_check_consent(
        self, checks: Sequence[tuple[str, str]]
    ) -> list[consent_pb2.CheckConsentResponse]:
        return self._run(self._client.batch_check_consent(checks))

    def list_purposes(self) -> list[consent_pb2.Purpose]:
        return self._run(self._client.list_purposes())

    def upsert_purpose(
        self, name: str, *, description: str = "", allowed_services: Sequence[str] = ()
    ) -> consent_pb2.Purpose:
        return self._run(
            self._client.upsert_purpose(
                name, description=description, allowed_services=allowed_services
            )
        )

    def get_consent_report(
        self,
        *,
        start: datetime,
        end: datetime,
        bucket: str = "day",
        purposes: Sequence[str] = (),
    ) -> list[consent_pb2.ConsentReportRow]:
        return self._run(
            self._client.get_consent_report(start=start, end=end, bucket=bucket, purposes=purposes)
        )

    def request_export(
        self, subject_id: str, *, reference: str = "", idempotency_key: str = ""
    ) -> privacy_pb2.PrivacyRequest:
        return self._run(
            self._client.request_export(
                subject_id, reference=reference, idempotency_key=idempotency_key
            )
        )

    def request_erasure(
        self,
        subject_id: str,
        *,
        confirm: bool,
        reference: str = "",
        idempotency_key: str = "",
    ) -> privacy_pb2.PrivacyRequest:
        return self._run(
            self._client.request_erasure(
                subject_id, confirm=confirm, reference=reference, idempotency_key=idempotency_key
            )
        )

    def get_privacy_request(self, request_id: str) -> privacy_pb2.PrivacyRequest:
        return self._run(self._client.get_privacy_request(request_id))

    def list_privacy_requests(
        self,
        *,
        state: RequestState = privacy_pb2.REQUEST_STATE_UNSPECIFIED,
        subject_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> privacy_pb2.ListPrivacyRequestsResponse:
        return self._run(
            self._client.list_privacy_requests(
                state=state, subject_id=subject_id, page_size=page_size, page_token=page_token
            )
        )

    def get_export_document(self, request_id: str) -> dict[str, Any]:
        return self._run(self._client.get_export_document(request_id))

    def list_data_holders(self) -> list[str]:
        return self._run(self._client.list_data_holders())
