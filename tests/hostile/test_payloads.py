"""Payloads built to hurt: messages over the 4 MiB limit, segment rules nested a thousand
levels deep (protobuf and text), and Structs nested deeply in a profile search value and in
an ingest event's properties. Each gets a precise refusal, quickly, and the service stays
SERVING."""

from __future__ import annotations

import struct
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from tailor.common.v1 import common_pb2
from tailor.consent.v1 import consent_pb2
from tailor.events.v1 import events_pb2
from tailor.ingest.v1 import ingest_pb2
from tailor.profile.v1 import profile_pb2
from tailor.recommend.v1 import recommend_pb2
from tailor.segment.v1 import segment_pb2
from tailor_core.server import MAX_MESSAGE_BYTES
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.platform import Metadata, RunningPlatform

from .conftest import EVERYTHING, INGEST_SERVICES, METHODS, Answer, Caller, host_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Deep enough to pass any recursion limit (protobuf's decoder stops at 100 levels, Python's
#: stack at about 1,000 frames).
VERY_DEEP = 1_000
#: Shallow enough to decode (each Struct level is three message levels: Struct, map entry,
#: Value), deep enough that only the service's own limits can refuse it.
DECODABLE_STRUCT_DEPTH = 30
#: A rule nested within protobuf's decoding limit but past the rule language's.
DECODABLE_RULE_DEPTH = 60
#: A refusal of a hostile payload must come at once, not after a timeout.
QUICK_SECONDS = 10.0


def _rpc(name: str) -> MethodDescriptor:
    for method in (*METHODS, *(m for s, _ in INGEST_SERVICES for m in s.methods)):
        if method.name == name:
            return method
    raise KeyError(name)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (a message, string or bytes), encoded by hand so that
    nesting depth is not bounded by the client's own protobuf library."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deep_value(depth: int) -> bytes:
    """A google.protobuf.Value: ``{"k": {"k": ... 1.0}}``, ``depth`` Structs deep."""
    value = _varint(2 << 3 | 1) + struct.pack("<d", 1.0)  # number_value = 1
    for _ in range(depth):
        entry = _field(1, b"k") + _field(2, value)  # map entry: key, value
        value = _field(5, _field(1, entry))  # Value.struct_value = Struct{fields}
    return value


def _deep_rule(depth: int) -> bytes:
    """A segment Rule: not not ... in segment "vip", ``depth`` levels deep."""
    rule = _field(8, _field(1, b"vip"))  # Rule.segment = SegmentReference{segment_id}
    for _ in range(depth):
        rule = _field(3, rule)  # Rule.not
    return rule


def _create_segment(rule_input: bytes) -> bytes:
    head = segment_pb2.CreateSegmentRequest(segment_id=unique_name("s"), name="deep")
    return head.SerializeToString() + _field(4, rule_input)


async def _refused_with_a_violation(
    caller: Caller, method: MethodDescriptor, body: bytes, metadata: Metadata = EVERYTHING
) -> Answer:
    answer = await caller.call(method, body, metadata, timeout=QUICK_SECONDS)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
    assert answer.field_violations(), answer
    assert await caller.serving(host_of(method))
    return answer


OVERSIZE = MAX_MESSAGE_BYTES + 64 * 1024
JUST_UNDER = MAX_MESSAGE_BYTES - 64 * 1024
#: One RPC per service, each with a request whose one long string makes it ``size`` bytes.
HUGE_REQUESTS: dict[str, Callable[[str], Message]] = {
    "GrantConsent": lambda text: consent_pb2.GrantConsentRequest(
        subject_id=text, purposes=["analytics"]
    ),
    "Track": lambda text: ingest_pb2.TrackRequest(
        event=events_pb2.CustomerEvent(user_id=text, track=events_pb2.Track(event="Big"))
    ),
    "GetProfile": lambda text: profile_pb2.GetProfileRequest(subject_id=text, purpose="analytics"),
    "CreateSegment": lambda text: segment_pb2.CreateSegmentRequest(
        segment_id="huge", name="huge", rule=segment_pb2.RuleInput(text=text)
    ),
    "Recommend": lambda text: recommend_pb2.RecommendRequest(subject_id=text, k=5),
}


def _huge(name: str, size: int) -> bytes:
    body: bytes = HUGE_REQUESTS[name]("x" * size).SerializeToString()
    return body


@pytest.mark.parametrize("name", HUGE_REQUESTS)
async def test_a_message_over_the_limit_is_refused_at_once(caller: Caller, name: str) -> None:
    body = _huge(name, OVERSIZE)
    assert len(body) > MAX_MESSAGE_BYTES
    answer = await caller.call(_rpc(name), body, timeout=QUICK_SECONDS)
    refusals = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert answer.code in refusals, answer
    assert await caller.serving(host_of(_rpc(name)))


@pytest.mark.parametrize(
    "name",
    list(HUGE_REQUESTS),
)
async def test_a_message_just_under_the_limit_is_refused_as_invalid(
    caller: Caller, platform: RunningPlatform, name: str
) -> None:
    body = _huge(name, JUST_UNDER)
    assert len(body) < MAX_MESSAGE_BYTES
    # Events come with a source's API key; everything else with a token.
    metadata = await platform.api_key() if name == "Track" else EVERYTHING
    await _refused_with_a_violation(caller, _rpc(name), body, metadata)


@pytest.mark.parametrize("rpc", ["CreateSegment", "ValidateRule", "PreviewSegment"])
async def test_a_rule_nested_a_thousand_levels_deep_in_protobuf_is_refused(
    caller: Caller, rpc: str
) -> None:
    rule_input = _field(1, _deep_rule(VERY_DEEP))  # RuleInput.rule
    body = _create_segment(rule_input) if rpc == "CreateSegment" else _field(1, rule_input)
    await _refused_with_a_violation(caller, _rpc(rpc), body)


async def test_a_rule_nested_past_the_language_limit_is_refused_at_its_path(
    caller: Caller,
) -> None:
    rule_input = _field(1, _deep_rule(DECODABLE_RULE_DEPTH))
    answer = await _refused_with_a_violation(
        caller, _rpc("CreateSegment"), _create_segment(rule_input)
    )
    paths = [v.field for v in answer.field_violations()]
    assert any(p.startswith("rule") and ".not" in p for p in paths), paths


@pytest.mark.parametrize(
    "text",
    [
        "not " * VERY_DEEP + 'in segment "vip"',
        "(" * VERY_DEEP + "trait computed.orders_lifetime >= 3" + ")" * VERY_DEEP,
        "(" * VERY_DEEP,
    ],
    ids=["not-chain", "parentheses", "unclosed"],
)
async def test_a_rule_nested_a_thousand_levels_deep_in_text_is_refused(
    caller: Caller, text: str
) -> None:
    rule_input = segment_pb2.RuleInput(text=text).SerializeToString()
    await _refused_with_a_violation(caller, _rpc("CreateSegment"), _create_segment(rule_input))
    validated = await caller.call(
        _rpc("ValidateRule"), _field(1, rule_input), timeout=QUICK_SECONDS
    )
    if validated.code == grpc.StatusCode.OK:
        reply = segment_pb2.ValidateRuleResponse.FromString(validated.body)
        assert not reply.valid
        assert reply.problems
    else:
        assert validated.code == grpc.StatusCode.INVALID_ARGUMENT, validated
        assert validated.field_violations()


@pytest.mark.parametrize("depth", [DECODABLE_STRUCT_DEPTH, VERY_DEEP])
async def test_a_deeply_nested_value_in_a_profile_search_is_refused(
    caller: Caller, depth: int
) -> None:
    condition = profile_pb2.TraitCondition(
        trait="computed.orders_lifetime", op=common_pb2.COMPARISON_EQ
    ).SerializeToString() + _field(3, _deep_value(depth))
    body = (
        _field(1, condition)
        + profile_pb2.FindProfilesRequest(purpose="analytics").SerializeToString()
    )
    await _refused_with_a_violation(caller, _rpc("FindProfiles"), body)


@pytest.mark.parametrize("depth", [DECODABLE_STRUCT_DEPTH + 5, VERY_DEEP])
async def test_deeply_nested_event_properties_are_refused(
    caller: Caller, platform: RunningPlatform, depth: int
) -> None:
    subject = unique_name("u")
    await platform.grant(subject, "analytics")
    event = events_pb2.CustomerEvent(
        message_id=unique_name("m"), user_id=subject, track=events_pb2.Track(event="Deep Thing")
    )
    event.timestamp.GetCurrentTime()
    properties = _field(1, _field(1, b"deep") + _field(2, _deep_value(depth)))
    body = _field(1, event.SerializeToString() + _field(7, properties))  # TrackRequest.event
    await _refused_with_a_violation(caller, _rpc("Track"), body, await platform.api_key())
