"""The consent ledger through its gRPC API, on real Postgres and NATS."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tailor.consent.v1 import consent_pb2 as pb
from tailor.consent.v1 import consent_pb2_grpc
from tailor.events.v1.events_pb2 import Envelope
from tailor_core.envelopes import timestamp
from tailor_core.streams import Stream
from tailor_core.testing.waiting import wait_until

from .conftest import WRITE, ConsentHarness

pytestmark = [pytest.mark.integration]

BANNER = pb.DecisionMetadata(
    source=pb.CONSENT_SOURCE_BANNER, jurisdiction=pb.JURISDICTION_GDPR, policy_version="2026-05"
)


async def _check(
    stub: consent_pb2_grpc.ConsentServiceStub, h: ConsentHarness, subject: str, purpose: str
) -> pb.CheckConsentResponse:
    return await stub.CheckConsent(
        pb.CheckConsentRequest(subject_id=subject, purpose=purpose),
        metadata=h.credentials("consent:check", kind="service"),
    )


async def test_grant_then_withdraw_changes_the_answer_and_keeps_history(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    assert not (await _check(stub, consent, "user-1", "analytics")).allowed  # GDPR default
    await stub.GrantConsent(
        pb.GrantConsentRequest(
            subject_id="user-1", purposes=["analytics", "personalization"], metadata=BANNER
        ),
        metadata=creds,
    )
    assert (await _check(stub, consent, "user-1", "analytics")).reason == "granted"
    await stub.WithdrawConsent(
        pb.WithdrawConsentRequest(subject_id="user-1", purposes=["analytics"], metadata=BANNER),
        metadata=creds,
    )

    answer = await _check(stub, consent, "user-1", "analytics")
    assert (answer.allowed, answer.reason) == (False, "withdrawn")
    assert (await _check(stub, consent, "user-1", "personalization")).allowed
    history = await stub.GetConsentHistory(
        pb.GetConsentHistoryRequest(subject_id="user-1", purpose="analytics"), metadata=creds
    )
    assert [d.kind for d in history.decisions] == [
        pb.DECISION_KIND_GRANTED,
        pb.DECISION_KIND_WITHDRAWN,
    ]
    assert history.decisions[0].metadata.policy_version == "2026-05"


async def test_jurisdiction_sets_the_default_and_necessary_is_always_allowed(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    ccpa = pb.DecisionMetadata(source=pb.CONSENT_SOURCE_API, jurisdiction=pb.JURISDICTION_CCPA)
    await stub.DenyConsent(
        pb.DenyConsentRequest(
            subject_id="ca-user", purposes=["third_party_sharing"], metadata=ccpa
        ),
        metadata=creds,
    )

    state = await stub.GetConsent(pb.GetConsentRequest(subject_id="ca-user"), metadata=creds)
    by_purpose = {p.purpose: p for p in state.purposes}
    # CCPA: allowed until opted out
    assert by_purpose["marketing"].allowed
    assert by_purpose["marketing"].is_default
    assert not by_purpose["third_party_sharing"].allowed
    assert by_purpose["necessary"].allowed
    gdpr_state = await stub.GetConsent(pb.GetConsentRequest(subject_id="eu-user"), metadata=creds)
    assert {p.purpose for p in gdpr_state.purposes if p.allowed} == {"necessary"}


async def test_an_expired_grant_counts_as_denied(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    expiry = consent.clock.now + timedelta(days=30)
    await stub.GrantConsent(
        pb.GrantConsentRequest(
            subject_id="u", purposes=["marketing"], metadata=BANNER, expires_at=timestamp(expiry)
        ),
        metadata=creds,
    )
    assert (await _check(stub, consent, "u", "marketing")).allowed
    consent.clock.now = expiry + timedelta(seconds=1)
    answer = await _check(stub, consent, "u", "marketing")
    assert (answer.allowed, answer.reason) == (False, "expired")


async def test_each_decision_is_published_on_the_consent_stream(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    await stub.WithdrawConsent(
        pb.WithdrawConsentRequest(
            subject_id="alice@example.com", purposes=["personalization"], metadata=BANNER
        ),
        metadata=consent.credentials(*WRITE),
    )
    stream = consent.naming.stream_name(Stream.CONSENT)

    async def published() -> bool:
        return (await consent.js.stream_info(stream)).state.messages == 1

    await wait_until(published, timeout=5, message="decision on CONSENT")
    message = await consent.js.get_msg(stream, 1)
    assert message.subject == consent.naming.consent_subject("alice@example.com", "personalization")
    assert "alice" not in message.subject
    event = Envelope()
    event.ParseFromString(message.data)
    assert event.consent_decision_recorded.purpose == "personalization"
    assert event.consent_decision_recorded.granted is False


async def test_batch_check_answers_in_request_order(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    await stub.GrantConsent(
        pb.GrantConsentRequest(subject_id="a", purposes=["analytics"], metadata=BANNER),
        metadata=creds,
    )
    pairs = [("b", "analytics"), ("a", "analytics"), ("a", "necessary"), ("a", "marketing")]
    reply = await stub.BatchCheckConsent(
        pb.BatchCheckConsentRequest(
            checks=[pb.CheckConsentRequest(subject_id=s, purpose=p) for s, p in pairs]
        ),
        metadata=consent.credentials("consent:check", kind="service"),
    )
    assert [r.allowed for r in reply.results] == [False, True, True, False]


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    return [(v.field, v.reason) for v in details.field_violations]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            pb.GrantConsentRequest(subject_id="u", purposes=["telepathy"], metadata=BANNER),
            [("purposes[0]", "UNKNOWN_PURPOSE")],
        ),
        (
            pb.GrantConsentRequest(subject_id="", purposes=["analytics"], metadata=BANNER),
            [("subject_id", "REQUIRED")],
        ),
        (
            pb.GrantConsentRequest(subject_id="u", purposes=[], metadata=BANNER),
            [("purposes", "REQUIRED")],
        ),
        (
            pb.GrantConsentRequest(subject_id="x" * 300, purposes=["analytics"], metadata=BANNER),
            [("subject_id", "TOO_LONG")],
        ),
        (
            pb.GrantConsentRequest(
                subject_id="u",
                purposes=["analytics"],
                metadata=pb.DecisionMetadata(
                    source=pb.CONSENT_SOURCE_API, proof_reference="p" * 1000
                ),
            ),
            [("metadata.proof_reference", "TOO_LONG")],
        ),
        (
            pb.GrantConsentRequest(subject_id="u", purposes=["analytics"]),
            [("metadata.source", "REQUIRED")],
        ),
    ],
    ids=[
        "unknown purpose",
        "empty subject",
        "no purpose",
        "oversize subject",
        "oversize proof",
        "no source",
    ],
)
async def test_bad_input_gets_invalid_argument_naming_the_field(
    consent: ConsentHarness,
    stub: consent_pb2_grpc.ConsentServiceStub,
    request_: pb.GrantConsentRequest,
    expected: list[tuple[str, str]],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GrantConsent(request_, metadata=consent.credentials(*WRITE))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == expected


async def test_a_service_may_check_but_not_record_consent(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GrantConsent(
            pb.GrantConsentRequest(subject_id="u", purposes=["analytics"], metadata=BANNER),
            metadata=consent.credentials("consent:check", kind="service"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_ledger_refuses_updates(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    import asyncpg

    await stub.GrantConsent(
        pb.GrantConsentRequest(subject_id="u", purposes=["analytics"], metadata=BANNER),
        metadata=consent.credentials(*WRITE),
    )
    async with consent.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE decisions SET kind = 'denied'")


async def test_custom_purposes_can_be_added_but_built_ins_not_changed(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    added = await stub.UpsertPurpose(
        pb.UpsertPurposeRequest(
            purpose=pb.Purpose(
                name="loyalty_program", description="Points", allowed_services=["profile"]
            )
        ),
        metadata=creds,
    )
    assert not added.built_in
    consent.ledger._purposes_loaded_at = (
        -1e9
    )  # other replicas see it within seconds; this one at once
    await stub.GrantConsent(
        pb.GrantConsentRequest(subject_id="u", purposes=["loyalty_program"], metadata=BANNER),
        metadata=creds,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpsertPurpose(
            pb.UpsertPurposeRequest(purpose=pb.Purpose(name="analytics", description="x")),
            metadata=creds,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_subject_id_with_control_characters_is_refused_not_stored() -> None:
    from tailor_consent.domain.ledger import validate_subject

    assert [v.reason for v in validate_subject("ada\x00")] == ["CONTROL_CHARACTERS"]
    assert validate_subject("ada@example.com") == []
