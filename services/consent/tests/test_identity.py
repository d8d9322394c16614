"""Consent follows identity: decisions of a merged anonymous id carry over, the later wins."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tailor.consent.v1 import consent_pb2 as pb
from tailor.consent.v1 import consent_pb2_grpc
from tailor.events.v1.platform_events_pb2 import ProfilesMerged
from tailor_consent.identity import IdentityFollower
from tailor_core.envelopes import envelope, timestamp
from tailor_core.testing.waiting import wait_until

from .conftest import WRITE, ConsentHarness

pytestmark = [pytest.mark.integration]


def _meta(decided_at: object) -> pb.DecisionMetadata:
    return pb.DecisionMetadata(source=pb.CONSENT_SOURCE_BANNER, decided_at=timestamp(decided_at))  # type: ignore[arg-type]


async def test_merge_carries_the_later_decision_per_purpose_to_the_survivor(
    consent: ConsentHarness, stub: consent_pb2_grpc.ConsentServiceStub
) -> None:
    creds = consent.credentials(*WRITE)
    t0 = consent.clock.now - timedelta(hours=2)
    # The anonymous visitor accepted analytics and personalization on the banner...
    await stub.GrantConsent(
        pb.GrantConsentRequest(
            subject_id="anon-7", purposes=["analytics", "personalization"], metadata=_meta(t0)
        ),
        metadata=creds,
    )
    # ...the known user had withdrawn personalization later, in the app.
    await stub.WithdrawConsent(
        pb.WithdrawConsentRequest(
            subject_id="user-7",
            purposes=["personalization"],
            metadata=_meta(t0 + timedelta(hours=1)),
        ),
        metadata=creds,
    )
    follower = IdentityFollower(consent.pool, consent.js, consent.naming, consent.ledger).consumer()
    task = asyncio.create_task(follower.run())
    try:
        merge = envelope(
            source="tailor://profile",
            event_type="tailor.profile.v1.merged",
            subject="user-7",
            payload_field="profiles_merged",
            payload=ProfilesMerged(
                surviving_profile_id="user-7", merged_profile_ids=["anon-7"], reason="identify"
            ),
        )
        await consent.js.publish(
            consent.naming.profile_subject("user-7", "merged"),
            merge.SerializeToString(),
            headers={"Nats-Msg-Id": merge.id},
        )

        async def carried_over() -> bool:
            return (await consent.ledger.check("user-7", "analytics")).allowed

        await wait_until(carried_over, timeout=10, message="analytics carried over")
    finally:
        await follower.stop()
        await asyncio.wait_for(task, 10)

    personalization = await consent.ledger.check("user-7", "personalization")
    assert (personalization.allowed, personalization.reason) == (
        False,
        "withdrawn",
    )  # the later decision won
    history = await stub.GetConsentHistory(
        pb.GetConsentHistoryRequest(subject_id="user-7", purpose="analytics"), metadata=creds
    )
    assert [d.inherited_from for d in history.decisions] == ["anon-7"]
    assert history.decisions[0].metadata.source == pb.CONSENT_SOURCE_IDENTITY_MERGE
