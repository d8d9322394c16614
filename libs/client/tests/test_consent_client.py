"""ConsentClient and AsyncConsentClient against a real consent service: decisions, state,
checks, history, purposes and a data-subject export round-trip; bad requests raise
InvalidArgument naming the field."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tailor.consent.v1 import consent_pb2
from tailor.privacy.v1 import privacy_pb2
from tailor_client import AsyncConsentClient, ConsentClient
from tailor_client.errors import InvalidArgument, NotFound
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import RunningPlatform, running_platform
from tailor_core.testing.waiting import wait_until

from .conftest import token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAFF = token(
    "consent:read",
    "consent:write",
    "consent:check",
    "consent:admin",
    "audit:read",
    "privacy:admin",
)


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("consent-client-logs"),
        ("consent",),
        env={"consent": {"TAILOR_DATA_HOLDERS": "consent"}},  # the only service running
        prefix="cc",
    ) as running:
        yield running


async def test_decisions_round_trip_into_state_checks_and_history(
    platform: RunningPlatform,
) -> None:
    subject = unique_name("subject")
    async with AsyncConsentClient(platform.service("consent").address, STAFF) as consent:
        granted = await consent.grant_consent(
            subject,
            ["personalization", "marketing"],
            source=consent_pb2.CONSENT_SOURCE_BANNER,
            policy_version="2026-05",
        )
        await consent.withdraw_consent(subject, ["marketing"])
        state = await consent.get_consent(subject)
        checks = await consent.batch_check_consent(
            [(subject, "personalization"), (subject, "marketing")]
        )
        history = await consent.get_consent_history(subject)
        purposes = await consent.list_purposes()
    assert [(d.purpose, d.kind) for d in granted] == [
        ("personalization", consent_pb2.DECISION_KIND_GRANTED),
        ("marketing", consent_pb2.DECISION_KIND_GRANTED),
    ]
    allowed = {p.purpose: p.allowed for p in state.purposes}
    assert (allowed["personalization"], allowed["marketing"]) == (True, False)
    assert [(c.allowed, c.reason) for c in checks] == [(True, "granted"), (False, "withdrawn")]
    assert [d.kind for d in history.decisions][-1] == consent_pb2.DECISION_KIND_WITHDRAWN
    assert {"personalization", "marketing"} <= {p.name for p in purposes}

    def blocking() -> tuple[consent_pb2.CheckConsentResponse, list[consent_pb2.ConsentReportRow]]:
        with ConsentClient(platform.service("consent").address, STAFF) as client:
            now = datetime.now(UTC)
            return client.check_consent(subject, "marketing"), client.get_consent_report(
                start=now - timedelta(days=1), end=now + timedelta(hours=1)
            )

    check, report = await asyncio.to_thread(blocking)
    assert not check.allowed
    assert sum(row.withdrawals for row in report if row.purpose == "marketing") >= 1


async def test_an_export_request_completes_and_yields_its_document(
    platform: RunningPlatform,
) -> None:
    subject = unique_name("subject")
    async with AsyncConsentClient(platform.service("consent").address, STAFF) as consent:
        await consent.grant_consent(subject, ["analytics"])
        started = await consent.request_export(subject, reference="ticket-1")

        async def completed() -> bool:
            found = await consent.get_privacy_request(started.request_id)
            return found.state == privacy_pb2.REQUEST_STATE_COMPLETED

        await wait_until(completed, timeout=30, message="the export completed")
        document = await consent.get_export_document(started.request_id)
        listed = await consent.list_privacy_requests(subject_id=subject)
        holders = await consent.list_data_holders()
    assert document["subject_id"] == subject
    assert "consent" in document["services"]
    assert [r.request_id for r in listed.requests] == [started.request_id]
    assert holders == ["consent"]


async def test_bad_requests_raise_invalid_argument_naming_the_field(
    platform: RunningPlatform,
) -> None:
    async with AsyncConsentClient(platform.service("consent").address, STAFF) as consent:
        with pytest.raises(InvalidArgument) as unconfirmed:
            await consent.request_erasure(unique_name("subject"), confirm=False)
        with pytest.raises(InvalidArgument) as unsourced:
            await consent.grant_consent(
                unique_name("subject"),
                ["analytics"],
                source=consent_pb2.CONSENT_SOURCE_UNSPECIFIED,
            )
        with pytest.raises(NotFound):
            await consent.get_privacy_request(str(uuid.uuid4()))
    assert unconfirmed.value.violation("confirm") is not None, unconfirmed.value.violations
    assert unsourced.value.violation("metadata.source") is not None, unsourced.value.violations
