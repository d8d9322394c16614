"""Who may call what: every RPC that declares a scope refuses a token without it, an expired
or forged token and no credentials at all; and a caller without the subject's consent gets
nothing personal — not in the answer, not in the error, not in the trailers."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.profile.v1 import profile_pb2
from tailor.recommend.v1 import recommend_pb2
from tailor_core.auth import mint_token
from tailor_core.interceptors import scope_from_proto
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.platform import TEST_SECRET, Metadata, RunningPlatform, bearer
from tailor_core.testing.waiting import wait_until

from .conftest import ALL_SCOPES, INGEST_SERVICES, METHODS, Answer, Caller, path_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Every RPC that declares a scope, read from the contracts through the interceptor's own
#: lookup: a new RPC is covered here without a change.
SCOPED = [
    (method, scope)
    for method in (*METHODS, *(m for s, _ in INGEST_SERVICES for m in s.methods))
    if (scope := scope_from_proto(path_of(method)))
]
_IDS = [m.full_name.removeprefix("tailor.") for m, _ in SCOPED]


def _token(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def test_every_public_rpc_declares_a_scope() -> None:
    undeclared = [m.full_name for m in METHODS if scope_from_proto(path_of(m)) is None]
    assert not undeclared
    assert len(SCOPED) > len(METHODS)  # ingest's RPCs are in too


@pytest.mark.parametrize(("method", "scope"), SCOPED, ids=_IDS)
async def test_a_token_without_the_rpcs_scope_is_denied(
    caller: Caller, method: MethodDescriptor, scope: str
) -> None:
    others = bearer(*(s for s in ALL_SCOPES if s != scope))
    answer = await caller.call(method, b"", metadata=others)
    assert answer.code == grpc.StatusCode.PERMISSION_DENIED, answer
    assert scope in answer.details


@pytest.mark.parametrize(("method", "scope"), SCOPED, ids=_IDS)
async def test_expired_forged_or_missing_credentials_are_unauthenticated(
    caller: Caller, method: MethodDescriptor, scope: str
) -> None:
    expired = _token(mint_token(TEST_SECRET, "staff-1", "compliance", [scope], ttl_seconds=-60))
    forged = _token(mint_token("f" * 40, "staff-1", "compliance", [scope]))
    unsigned = _token(mint_token(TEST_SECRET, "staff-1", "compliance", [scope])[:-8] + "AAAAAAAA")
    for credentials in (expired, forged, unsigned, (), (("authorization", "Basic eDp5"),)):
        answer = await caller.call(method, b"", metadata=credentials)
        assert answer.code == grpc.StatusCode.UNAUTHENTICATED, (credentials, answer)


READER = bearer("profile:read", kind="service")
RECOMMENDER = bearer("recommend:read", kind="service")


@pytest.fixture(scope="module")
async def unconsented(platform: RunningPlatform, caller: Caller) -> tuple[str, str]:
    """A subject who identified with an e-mail address through ingest, with its profile
    projected, who consented to analytics (without which ingest keeps nothing) but not to
    personalization: (subject id, e-mail address)."""
    subject = unique_name("u")
    await platform.grant(subject, "analytics")
    email = f"{subject}.secret@example.com"
    identify = events_pb2.CustomerEvent(
        message_id=unique_name("m"),
        user_id=subject,
        identify=events_pb2.Identify(
            email=common_pb2.PersonalField(plaintext=email),
            demographics=events_pb2.Demographics(age=37, country="GB"),
        ),
    )
    identify.timestamp.GetCurrentTime()
    sent = await platform.send(identify)
    assert sent.results[0].outcome == ingest_pb2.EVENT_OUTCOME_ACCEPTED, sent
    partial = profile_pb2.GetProfileRequest(
        subject_id=subject, purpose="personalization", non_personal_only=True
    )

    async def projected() -> bool:
        answer = await caller.call(_method("GetProfile"), partial.SerializeToString(), READER)
        return bool(answer.code == grpc.StatusCode.OK)

    await wait_until(projected, timeout=30, message="the profile is projected")
    return subject, email


def _method(name: str) -> MethodDescriptor:
    for method in METHODS:
        if method.name == name:
            return method
    raise KeyError(name)


def _no_leak(answer: Answer, email: str) -> None:
    everything = answer.everything_sent()
    assert email.encode() not in everything
    assert email.split("@")[0].encode() + b"@" not in everything


async def test_a_personal_read_without_consent_is_denied_and_leaks_nothing(
    caller: Caller, unconsented: tuple[str, str]
) -> None:
    subject, email = unconsented
    request = profile_pb2.GetProfileRequest(subject_id=subject, purpose="personalization")
    answer = await caller.call(_method("GetProfile"), request.SerializeToString(), READER)
    assert answer.code == grpc.StatusCode.PERMISSION_DENIED, answer
    info = answer.error_info()
    assert info is not None
    assert info.reason == "CONSENT_REQUIRED"
    assert info.metadata["purpose"] == "personalization"
    _no_leak(answer, email)


async def test_other_reads_without_consent_leak_nothing(
    caller: Caller, unconsented: tuple[str, str]
) -> None:
    subject, email = unconsented
    partial = profile_pb2.GetProfileRequest(
        subject_id=subject, purpose="personalization", non_personal_only=True
    )
    answer = await caller.call(_method("GetProfile"), partial.SerializeToString(), READER)
    profile = profile_pb2.GetProfileResponse.FromString(answer.body).profile
    assert profile.personal_omitted
    assert not profile.identities
    _no_leak(answer, email)

    batch = profile_pb2.BatchGetProfilesRequest(subject_ids=[subject], purpose="personalization")
    answer = await caller.call(_method("BatchGetProfiles"), batch.SerializeToString(), READER)
    assert answer.code == grpc.StatusCode.OK, answer
    assert list(profile_pb2.BatchGetProfilesResponse.FromString(answer.body).denied_subject_ids)
    _no_leak(answer, email)

    search = profile_pb2.FindProfilesRequest(
        purpose="personalization",
        conditions=[
            profile_pb2.TraitCondition(trait="demographics.age", op=common_pb2.COMPARISON_EXISTS)
        ],
    )
    answer = await caller.call(_method("FindProfiles"), search.SerializeToString(), READER)
    assert answer.code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), answer
    _no_leak(answer, email)

    history = profile_pb2.GetTraitHistoryRequest(
        subject_id=subject, purpose="personalization", trait="email"
    )
    answer = await caller.call(_method("GetTraitHistory"), history.SerializeToString(), READER)
    assert answer.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    _no_leak(answer, email)


async def test_recommendations_without_consent_are_not_personalized(
    caller: Caller, unconsented: tuple[str, str]
) -> None:
    subject, email = unconsented
    request = recommend_pb2.RecommendRequest(subject_id=subject, k=5)
    answer = await caller.call(_method("Recommend"), request.SerializeToString(), RECOMMENDER)
    assert answer.code == grpc.StatusCode.OK, answer
    reply = recommend_pb2.RecommendResponse.FromString(answer.body)
    assert not reply.personalized
    assert reply.non_personalized_reason == recommend_pb2.NON_PERSONALIZED_REASON_NO_CONSENT
    _no_leak(answer, email)


async def test_with_consent_the_same_read_does_return_the_address(
    platform: RunningPlatform, caller: Caller, unconsented: tuple[str, str]
) -> None:
    """The control: the leak checks above search for something that is really there."""
    subject, email = unconsented
    await platform.grant(subject, "personalization")
    request = profile_pb2.GetProfileRequest(subject_id=subject, purpose="personalization")
    answers: list[Answer] = []

    async def opened() -> bool:
        answers.append(
            await caller.call(_method("GetProfile"), request.SerializeToString(), READER)
        )
        return bool(answers[-1].code == grpc.StatusCode.OK)

    await wait_until(opened, timeout=10, message="the grant reaches profile")
    assert email.encode() in answers[-1].body
