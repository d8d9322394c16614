"""Every public RPC of consent, privacy, profile, segment and recommend under random and
malformed input: a precise status every time, never INTERNAL, UNKNOWN, a hang or a crash,
and every service still SERVING afterwards."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tailor.consent.v1 import audit_pb2
from tailor_core.testing.fuzz import boundary_messages, draw_examples, messages, raw_bodies

from .conftest import METHODS, Caller, host_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES_PER_RPC = 6
RAW_BODIES_PER_RPC = 2


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("tailor."))
async def test_random_requests_get_a_precise_status(
    caller: Caller, method: MethodDescriptor
) -> None:
    structured = [
        m.SerializeToString() for m in draw_examples(messages(method.input_type), MESSAGES_PER_RPC)
    ]
    bodies = structured + draw_examples(raw_bodies(), RAW_BODIES_PER_RPC)
    answers = [await caller.call(method, body) for body in bodies]  # a token with every scope
    anonymous = await caller.call(method, structured[0], metadata=())
    answers.append(anonymous)

    imprecise = [a for a in answers if not a.precise]
    codes = Counter(a.code for a in answers)
    assert not imprecise, f"{codes}\n{caller.log_lines(host_of(method), imprecise)}"
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    assert await caller.serving(host_of(method))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("tailor."))
async def test_boundary_values_in_every_field_get_a_precise_status(
    caller: Caller, method: MethodDescriptor
) -> None:
    answers = [
        await caller.call(method, m.SerializeToString())
        for m in boundary_messages(method.input_type)
    ]
    imprecise = [a for a in answers if not a.precise]
    codes = Counter(a.code for a in answers)
    assert not imprecise, f"{codes}\n{caller.log_lines(host_of(method), imprecise)}"


async def test_verify_audit_chain_takes_a_to_sequence_past_int32(caller: Caller) -> None:
    method = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].methods_by_name[
        "VerifyAuditChain"
    ]
    request = audit_pb2.VerifyAuditChainRequest(from_sequence=0, to_sequence=2**31)
    answer = await caller.call(method, request.SerializeToString())
    assert answer.code == grpc.StatusCode.OK, answer.details


async def test_every_service_is_serving_after_the_fuzzing(caller: Caller) -> None:
    for process in ("consent", "ingest", "profile", "segment", "recommend"):
        assert await caller.serving(process), process
