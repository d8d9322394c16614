"""Subject data keys: stable per subject, handed out for decryption only with consent."""

from __future__ import annotations

import grpc
import pytest

from tailor.consent.v1 import audit_pb2, audit_pb2_grpc, consent_pb2_grpc, keys_pb2, keys_pb2_grpc
from tailor.consent.v1 import consent_pb2 as pb
from tailor_core.crypto import DataKey, decrypt_field, encrypt_field

from .conftest import WRITE, ConsentHarness

pytestmark = [pytest.mark.integration]

META = pb.DecisionMetadata(source=pb.CONSENT_SOURCE_BANNER)


def _ingest(h: ConsentHarness) -> tuple[tuple[str, str], ...]:
    return h.credentials("keys:encrypt", sub="ingest", kind="service")


def _service(h: ConsentHarness, name: str) -> tuple[tuple[str, str], ...]:
    return h.credentials("keys:request", sub=name, kind="service")


async def test_encryption_key_is_created_once_per_subject(consent: ConsentHarness) -> None:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        first = await keys.GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id="alice"), metadata=_ingest(consent)
        )
        again = await keys.GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id="alice"), metadata=_ingest(consent)
        )
        other = await keys.GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id="bob"), metadata=_ingest(consent)
        )
    assert (first.key_id, first.key) == (again.key_id, again.key)
    assert len(first.key) == 32
    assert other.key != first.key
    async with consent.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT wrapped FROM data_keys WHERE subject_id = 'alice'")
    assert first.key not in bytes(stored)  # only the wrapped form is stored


async def test_decryption_needs_a_registered_service_and_current_consent(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        granted = await keys.GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id="alice"), metadata=_ingest(consent)
        )
        sealed = encrypt_field(
            DataKey(granted.key_id, granted.key), "identify.email", "alice@example.com"
        )
        ask = keys_pb2.GetDecryptionKeyRequest(
            subject_id="alice", purpose="personalization", key_id=granted.key_id
        )

        with pytest.raises(grpc.aio.AioRpcError) as no_consent:
            await keys.GetDecryptionKey(ask, metadata=_service(consent, "recommend"))
        await stub.GrantConsent(
            pb.GrantConsentRequest(subject_id="alice", purposes=["personalization"], metadata=META),
            metadata=consent.credentials(*WRITE),
        )
        opened = await keys.GetDecryptionKey(ask, metadata=_service(consent, "recommend"))
        with pytest.raises(grpc.aio.AioRpcError) as wrong_service:
            await keys.GetDecryptionKey(
                ask, metadata=_service(consent, "segment")
            )  # not registered for it
        refusals = await audit_pb2_grpc.AuditServiceStub(channel).QueryAudit(
            audit_pb2.QueryAuditRequest(
                subject_id="alice", actions=[audit_pb2.AUDIT_ACTION_KEY_REFUSED]
            ),
            metadata=consent.credentials("audit:read"),
        )
    assert no_consent.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert decrypt_field(DataKey(opened.key_id, opened.key), sealed) == "alice@example.com"
    assert wrong_service.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sorted(e.actor for e in refusals.entries) == ["recommend", "segment"]


async def test_a_client_app_cannot_ask_for_keys(consent: ConsentHarness) -> None:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await keys_pb2_grpc.KeyServiceStub(channel).GetEncryptionKey(
                keys_pb2.GetEncryptionKeyRequest(subject_id="alice"),
                metadata=consent.credentials("events:write", kind="client"),
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_master_key_rotation_rewraps_every_key_and_old_ciphertext_still_opens(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    async with grpc.aio.insecure_channel(consent.address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        sealed = {}
        for subject in ("a", "b", "c"):
            key = await keys.GetEncryptionKey(
                keys_pb2.GetEncryptionKeyRequest(subject_id=subject), metadata=_ingest(consent)
            )
            sealed[subject] = encrypt_field(
                DataKey(key.key_id, key.key), "identify.name", f"name of {subject}"
            )
        rotated = await keys.RotateMasterKey(
            keys_pb2.RotateMasterKeyRequest(new_master_key_id="m2"),
            metadata=consent.credentials("keys:admin"),
        )
        await stub.GrantConsent(
            pb.GrantConsentRequest(subject_id="b", purposes=["marketing"], metadata=META),
            metadata=consent.credentials(*WRITE),
        )
        opened = await keys.GetDecryptionKey(
            keys_pb2.GetDecryptionKeyRequest(subject_id="b", purpose="marketing"),
            metadata=_service(consent, "segment"),
        )
    assert (rotated.rewrapped, rotated.master_key_id) == (3, "m2")
    async with consent.pool.acquire() as conn:
        masters = await conn.fetch("SELECT DISTINCT master_key_id FROM data_keys")
    assert [row["master_key_id"] for row in masters] == ["m2"]
    assert decrypt_field(DataKey(opened.key_id, opened.key), sealed["b"]) == "name of b"
