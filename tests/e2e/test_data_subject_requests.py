"""Data-subject requests across the five services running as separate processes.

Erasure leaves no row in any schema and no message in any stream that names the subject,
and ciphertext captured before it can no longer be decrypted. Export gathers every
service's part and nothing of another subject. A service that is down when the request
arrives does its step when it comes back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2 as pb
from tailor.consent.v1 import consent_pb2_grpc, keys_pb2, keys_pb2_grpc
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import admin_pb2, admin_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from tailor.privacy.v1 import privacy_pb2, privacy_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import delete_streams, platform_streams
from tailor_core.crypto import DataKey, DecryptionError, decrypt_field, encrypt_field
from tailor_core.settings import SERVICE_NAMES
from tailor_core.streams import Naming, Stream
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceGroup
from tailor_core.testing.traces import rows_naming
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.embedded_smoke]

SECRET = "d" * 40
SUBJECT = "erase-me@example.com"
OTHER = "keep-me@example.com"


def _token(sub: str, kind: str, *scopes: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(SECRET, sub, kind, scopes)}"),)  # type: ignore[arg-type]


OFFICER = _token("officer-9", "compliance", "privacy:admin", "consent:write")


Platform = ServiceGroup


@pytest.fixture
async def platform(infra: Infra, nc: NatsClient, tmp_path: Path) -> AsyncIterator[ServiceGroup]:
    running = ServiceGroup(infra, unique_name("d"), SECRET, tmp_path)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
        await running.drop_schemas()
        await delete_streams(
            nc.jetstream(), [s.name for s in platform_streams(Naming(running.namespace))]
        )


async def _finished(
    platform: Platform, request_id: str, timeout: float = 60
) -> privacy_pb2.PrivacyRequest:
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        stub = privacy_pb2_grpc.PrivacyServiceStub(channel)
        state: list[privacy_pb2.PrivacyRequest] = []

        async def completed() -> bool:
            state[:] = [
                await stub.GetPrivacyRequest(
                    privacy_pb2.GetPrivacyRequestRequest(request_id=request_id), metadata=OFFICER
                )
            ]
            return state[0].state == privacy_pb2.REQUEST_STATE_COMPLETED

        await wait_until(completed, timeout=timeout, message="request completed")
        return state[0]


async def _grant(platform: Platform, subject: str) -> None:
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        await consent_pb2_grpc.ConsentServiceStub(channel).GrantConsent(
            pb.GrantConsentRequest(
                subject_id=subject,
                purposes=["personalization", "analytics"],
                metadata=pb.DecisionMetadata(source=pb.CONSENT_SOURCE_BANNER),
            ),
            metadata=OFFICER,
        )


async def test_erasure_leaves_no_trace_and_old_ciphertext_unreadable(
    platform: Platform, infra: Infra, nc: NatsClient
) -> None:
    js = nc.jetstream()
    await _grant(platform, SUBJECT)
    await _grant(platform, OTHER)
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        granted = await keys.GetEncryptionKey(
            keys_pb2.GetEncryptionKeyRequest(subject_id=SUBJECT),
            metadata=_token("ingest", "service", "keys:encrypt"),
        )
    captured_key = DataKey(granted.key_id, granted.key)
    sealed = encrypt_field(captured_key, "identify.email", SUBJECT)  # e.g. sitting in a backup
    naming = Naming(platform.namespace, 4)
    await js.publish(
        naming.event_subject(SUBJECT, "Order Completed"), b"order", headers={"Nats-Msg-Id": "o-1"}
    )
    await js.publish(
        naming.profile_subject(SUBJECT, "changed"), b"profile", headers={"Nats-Msg-Id": "p-1"}
    )
    await js.publish(
        naming.event_subject(OTHER, "Order Completed"), b"other", headers={"Nats-Msg-Id": "o-2"}
    )
    # Through ingest: a sealed identify and a rejected order for each, so ingest's tables and
    # the REJECTED stream hold something of both.
    await _send_through_ingest(platform, SUBJECT)
    await _send_through_ingest(platform, OTHER)

    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        privacy = privacy_pb2_grpc.PrivacyServiceStub(channel)
        requested = await privacy.RequestErasure(
            privacy_pb2.RequestErasureRequest(subject_id=SUBJECT, confirm=True, reference="DSR-42"),
            metadata=OFFICER,
        )
    done = await _finished(platform, requested.request_id)

    assert {s.service for s in done.steps} == set(SERVICE_NAMES)
    assert SUBJECT not in done.subject_id  # the finished request keeps only a token
    for stream, subject_filter in naming.subject_filters(SUBJECT).items():
        with pytest.raises(NotFoundError):
            await js.get_last_msg(naming.stream_name(stream), subject_filter)
    other_left = await js.get_last_msg(
        naming.stream_name(Stream.EVENTS), naming.subject_filters(OTHER)[Stream.EVENTS]
    )
    assert other_left.data is not None
    for stream in Stream:
        info = await js.stream_info(naming.stream_name(stream))
        for seq in (
            range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ()
        ):
            message = await _get(js, naming.stream_name(stream), seq)
            assert message is None or SUBJECT.encode() not in message, (
                f"{stream} #{seq} names the subject"
            )
    schemas = [s.schema for s in platform.services.values()]
    assert await rows_naming(infra.pg_dsn, schemas, SUBJECT) == []
    assert await rows_naming(infra.pg_dsn, schemas, OTHER) != []  # the scan does find what is there

    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await keys_pb2_grpc.KeyServiceStub(channel).GetDecryptionKey(
                keys_pb2.GetDecryptionKeyRequest(subject_id=SUBJECT, purpose="personalization"),
                metadata=_token("recommend", "service", "keys:request"),
            )
    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(DecryptionError):
        # whatever key a thief might try now, it is not the destroyed one
        decrypt_field(DataKey(granted.key_id, bytes(32)), sealed)


async def _send_through_ingest(platform: Platform, subject: str) -> None:
    staff = _token("staff-1", "compliance", "ingest:admin")
    async with grpc.aio.insecure_channel(platform.services["ingest"].address) as channel:
        created = await admin_pb2_grpc.IngestAdminServiceStub(channel).CreateApiKey(
            admin_pb2.CreateApiKeyRequest(source_id="shop"), metadata=staff
        )
        key = (("x-api-key", created.secret),)
        identify = events_pb2.CustomerEvent(
            message_id=f"id-{subject}",
            user_id=subject,
            identify=events_pb2.Identify(email=common_pb2.PersonalField(plaintext=subject)),
        )
        bad_order = events_pb2.CustomerEvent(
            message_id=f"bad-{subject}",
            user_id=subject,
            track=events_pb2.Track(
                event="Order Completed",
                order=events_pb2.OrderEvent(
                    order_id="1",
                    products=[
                        events_pb2.Product(
                            product_id="p1",
                            quantity=-1,
                            price=common_pb2.Money(amount="1.00", currency="GBP"),
                        )
                    ],
                ),
            ),
        )
        reply = await ingest_pb2_grpc.IngestServiceStub(channel).Batch(
            ingest_pb2.BatchRequest(events=[identify, bad_order]), metadata=key
        )
    assert [r.outcome for r in reply.results] == [
        ingest_pb2.EVENT_OUTCOME_ACCEPTED,
        ingest_pb2.EVENT_OUTCOME_REJECTED,
    ]


async def _get(js: object, stream: str, seq: int) -> bytes | None:
    try:
        message = await js.get_msg(stream, seq)  # type: ignore[attr-defined]
    except NotFoundError:
        return None  # purged or deleted
    return bytes(message.data)


async def test_export_gathers_every_service_and_nothing_of_another_subject(
    platform: Platform,
) -> None:
    await _grant(platform, SUBJECT)
    await _grant(platform, OTHER)
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        privacy = privacy_pb2_grpc.PrivacyServiceStub(channel)
        requested = await privacy.RequestExport(
            privacy_pb2.RequestExportRequest(subject_id=SUBJECT, idempotency_key="exp-1"),
            metadata=OFFICER,
        )
        again = await privacy.RequestExport(
            privacy_pb2.RequestExportRequest(subject_id=SUBJECT, idempotency_key="exp-1"),
            metadata=OFFICER,
        )
        assert again.request_id == requested.request_id
        await _finished(platform, requested.request_id)
        reply = await privacy.GetExportDocument(
            privacy_pb2.GetExportDocumentRequest(request_id=requested.request_id), metadata=OFFICER
        )
    document = json.loads(reply.document_json)
    assert set(document["services"]) == set(SERVICE_NAMES)
    decisions = document["services"]["consent"]["consent_decisions"]
    assert {d["purpose"] for d in decisions} == {"personalization", "analytics"}
    assert OTHER not in reply.document_json.decode()


async def test_a_service_that_was_down_does_its_step_when_it_comes_back(platform: Platform) -> None:
    segment = platform.services["segment"]
    assert segment.stop() == 0
    async with grpc.aio.insecure_channel(platform.consent.address) as channel:
        privacy = privacy_pb2_grpc.PrivacyServiceStub(channel)
        requested = await privacy.RequestExport(
            privacy_pb2.RequestExportRequest(subject_id=SUBJECT), metadata=OFFICER
        )

        async def only_segment_pending() -> bool:
            view = await privacy.GetPrivacyRequest(
                privacy_pb2.GetPrivacyRequestRequest(request_id=requested.request_id),
                metadata=OFFICER,
            )
            pending = {
                s.service for s in view.steps if s.state != 2
            }  # PRIVACY_STEP_STATE_COMPLETED
            return pending == {"segment"}

        await wait_until(only_segment_pending, timeout=60, message="the others done")
    await segment.start()
    done = await _finished(platform, requested.request_id)
    assert all(step.state == 2 for step in done.steps)
