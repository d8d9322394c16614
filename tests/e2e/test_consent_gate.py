"""The consent gate across processes: withdrawal propagation and failing closed.

The consent service runs as its own OS process; the client runs here, as any other
service's would.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from nats.aio.client import Client as NatsClient

from tailor.consent.v1 import consent_pb2 as pb
from tailor.consent.v1 import consent_pb2_grpc
from tailor_core.auth import mint_token
from tailor_core.bus import delete_streams, platform_streams
from tailor_core.consent_client import ConsentClient, ServiceToken
from tailor_core.streams import Naming
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.services import ServiceProcess
from tailor_core.testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]

SECRET = "g" * 40
META = pb.DecisionMetadata(source=pb.CONSENT_SOURCE_BANNER)
OFFICER = (
    ("authorization", f"Bearer {mint_token(SECRET, 'officer', 'compliance', ['consent:write'])}"),
)


@pytest.fixture
async def consent_service(infra: Infra, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    namespace = unique_name("g")
    service = ServiceProcess(
        "consent",
        infra,
        schema=f"{namespace}_consent",
        namespace=namespace,
        secret=SECRET,
        log_dir=tmp_path,
    )
    await service.start()
    try:
        yield service
    finally:
        service.stop()
        conn = await asyncpg.connect(infra.pg_dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{service.schema}" CASCADE')
        await conn.close()


@pytest.fixture
async def client(consent_service: ServiceProcess, nc: NatsClient) -> AsyncIterator[ConsentClient]:
    naming = Naming(consent_service.namespace, 4)
    gate = ConsentClient(
        nats=nc,
        naming=naming,
        consent_addr=consent_service.address,
        token=ServiceToken(SECRET, "profile", ["consent:check"]),
    )
    await gate.start()
    try:
        yield gate
    finally:
        await gate.close()
        await delete_streams(nc.jetstream(), [s.name for s in platform_streams(naming)])


async def _record(service: ServiceProcess, kind: str, subject: str, purpose: str) -> None:
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        if kind == "grant":
            await stub.GrantConsent(
                pb.GrantConsentRequest(subject_id=subject, purposes=[purpose], metadata=META),
                metadata=OFFICER,
            )
        else:
            await stub.WithdrawConsent(
                pb.WithdrawConsentRequest(subject_id=subject, purposes=[purpose], metadata=META),
                metadata=OFFICER,
            )


async def test_a_withdrawal_changes_the_answer_in_another_process_within_a_second(
    consent_service: ServiceProcess, client: ConsentClient
) -> None:
    figures = []
    for round_ in range(5):
        subject = f"user-{round_}"
        seen = client.invalidations
        await _record(consent_service, "grant", subject, "personalization")

        async def grant_seen(before: int = seen) -> bool:
            return client.invalidations > before

        await wait_until(grant_seen, timeout=5, message="grant announced")
        assert (await client.check(subject, "personalization")).allowed
        assert (
            await client.check(subject, "personalization")
        ).cached  # the answer now lives in the cache

        started = time.monotonic()
        await _record(consent_service, "withdraw", subject, "personalization")

        async def denied(subject: str = subject) -> bool:
            return not (await client.check(subject, "personalization")).allowed

        await wait_until(denied, timeout=5, interval=0.005, message="withdrawal seen")
        figures.append(time.monotonic() - started)
    # Generous bound; the benchmark reports the distribution.
    assert max(figures) < 1.0, figures


async def test_every_check_denies_once_the_consent_service_is_gone(
    consent_service: ServiceProcess, client: ConsentClient
) -> None:
    await _record(consent_service, "grant", "cached-user", "analytics")
    assert (await client.check("cached-user", "analytics")).allowed

    consent_service.kill()

    async def closed() -> bool:
        answers = [await client.check(s, "analytics") for s in ("cached-user", "never-seen")]
        return all(not a.allowed and a.reason == "consent_unavailable" for a in answers)

    await wait_until(closed, timeout=5, message="fail closed")


async def test_an_unknown_purpose_is_denied(
    consent_service: ServiceProcess, client: ConsentClient
) -> None:
    answer = await client.check("user", "mind_reading")
    assert (answer.allowed, answer.reason) == (False, "invalid_request")


async def test_a_client_that_never_reached_the_consent_service_denies(nc: NatsClient) -> None:
    from tailor_core.embedded import free_port

    gate = ConsentClient(
        nats=nc,
        naming=Naming(unique_name("g")),
        consent_addr=f"127.0.0.1:{free_port()}",
        token=ServiceToken(SECRET, "segment", ["consent:check"]),
    )
    await gate.start()
    try:
        answer = await gate.check("user", "marketing")
    finally:
        await gate.close()
    assert (answer.allowed, answer.reason) == (False, "consent_unavailable")


async def test_many_checks_at_once_agree_with_single_checks_and_fill_the_cache(
    consent_service: ServiceProcess, client: ConsentClient
) -> None:
    seen = client.invalidations
    await _record(consent_service, "grant", "granted-user", "analytics")

    async def grant_seen() -> bool:
        return client.invalidations > seen

    await wait_until(grant_seen, timeout=5, message="grant announced")
    pairs = [
        ("granted-user", "analytics"),
        ("silent-user", "analytics"),
        ("silent-user", "necessary"),
        ("granted-user", "mind_reading"),
    ]
    answers = await client.check_many(pairs)
    assert [answers[p].allowed for p in pairs] == [True, False, True, False]
    assert answers[("granted-user", "mind_reading")].reason == "invalid_request"
    for pair in pairs:
        single = await client.check(*pair)
        assert single.allowed == answers[pair].allowed
    again = await client.check_many(pairs[:3])
    assert all(answer.cached for answer in again.values())
