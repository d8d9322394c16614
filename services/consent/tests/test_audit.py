"""The audit chain records every consent change and detects an edited or deleted row."""

from __future__ import annotations

import grpc
import pytest

from tailor.consent.v1 import audit_pb2, audit_pb2_grpc, consent_pb2_grpc
from tailor.consent.v1 import consent_pb2 as pb
from tailor_core.streams import subject_token

from .conftest import WRITE, ConsentHarness

pytestmark = [pytest.mark.integration]

META = pb.DecisionMetadata(source=pb.CONSENT_SOURCE_APP_SETTINGS)


async def _record_some(consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub) -> None:
    creds = consent.credentials(*WRITE, sub="officer-7")
    for subject in ("s1", "s2", "s3"):
        await stub.GrantConsent(
            pb.GrantConsentRequest(
                subject_id=subject, purposes=["analytics", "marketing"], metadata=META
            ),
            metadata=creds,
        )
    await stub.WithdrawConsent(
        pb.WithdrawConsentRequest(subject_id="s2", purposes=["marketing"], metadata=META),
        metadata=creds,
    )


async def _verify(consent: ConsentHarness) -> audit_pb2.VerifyAuditChainResponse:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        return await audit_pb2_grpc.AuditServiceStub(channel).VerifyAuditChain(
            audit_pb2.VerifyAuditChainRequest(), metadata=consent.credentials("audit:read")
        )


async def test_every_change_is_audited_and_queryable(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    await _record_some(consent, stub)
    async with grpc.aio.insecure_channel(consent.address) as channel:
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        s2 = await audit.QueryAudit(
            audit_pb2.QueryAuditRequest(subject_id="s2"), metadata=consent.credentials("audit:read")
        )
        by_officer = await audit.QueryAudit(
            audit_pb2.QueryAuditRequest(actor="officer-7", purpose="marketing"),
            metadata=consent.credentials("audit:read"),
        )
    assert [e.details["kind"] for e in s2.entries] == [
        "withdrawn",
        "granted",
        "granted",
    ]  # newest first
    # the log names subjects only by their one-way tokens
    assert {e.subject_id for e in by_officer.entries} == {
        subject_token(s) for s in ("s1", "s2", "s3")
    }
    assert len(by_officer.entries) == 4
    verified = await _verify(consent)
    assert (verified.intact, verified.checked) == (True, 7)


async def test_an_edited_row_breaks_the_chain_where_it_was_edited(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    await _record_some(consent, stub)
    async with consent.pool.acquire() as conn:
        await conn.execute("UPDATE audit_log SET actor = 'someone-else' WHERE sequence = 4")
    verified = await _verify(consent)
    assert (verified.intact, verified.first_broken_sequence, verified.problem) == (
        False,
        4,
        "hash_mismatch",
    )


async def test_a_deleted_row_is_found_missing(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    await _record_some(consent, stub)
    async with consent.pool.acquire() as conn:
        await conn.execute("DELETE FROM audit_log WHERE sequence = 3")
    verified = await _verify(consent)
    assert (verified.intact, verified.first_broken_sequence, verified.problem) == (
        False,
        3,
        "missing_entry",
    )
