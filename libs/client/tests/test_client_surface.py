"""Every public RPC has a typed method, and the blocking clients mirror the asyncio ones."""

from __future__ import annotations

import inspect
import re

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from tailor.consent.v1 import consent_pb2
from tailor.privacy.v1 import privacy_pb2
from tailor.profile.v1 import profile_pb2
from tailor.recommend.v1 import recommend_pb2
from tailor.segment.v1 import segment_pb2
from tailor_client import (
    AsyncConsentClient,
    AsyncProfileClient,
    AsyncRecommendClient,
    AsyncSegmentClient,
    ConsentClient,
    ProfileClient,
    RecommendClient,
    SegmentClient,
)

# PrivacyService.ReportStep is how a data holder reports its step: services call it, not
# apps or staff.
NOT_FOR_APPS = {"ReportStep"}

CLIENTS = [
    (
        ProfileClient,
        AsyncProfileClient,
        [profile_pb2.DESCRIPTOR.services_by_name["ProfileService"]],
    ),
    (
        SegmentClient,
        AsyncSegmentClient,
        [segment_pb2.DESCRIPTOR.services_by_name["SegmentService"]],
    ),
    (
        RecommendClient,
        AsyncRecommendClient,
        [recommend_pb2.DESCRIPTOR.services_by_name["RecommendService"]],
    ),
    (
        ConsentClient,
        AsyncConsentClient,
        [
            consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
            privacy_pb2.DESCRIPTOR.services_by_name["PrivacyService"],
        ],
    ),
]

# The methods whose name is not the RPC's in snake case.
RENAMED = {"Recommend": "recommend", "Popular": "popular"}


def _snake(rpc: str) -> str:
    return RENAMED.get(rpc) or re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()


def _rpcs(services: list[ServiceDescriptor]) -> list[str]:
    return [m.name for s in services for m in s.methods if m.name not in NOT_FOR_APPS]


def _public(cls: type) -> set[str]:
    return {
        name
        for name, _ in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name != "close"
    }


@pytest.mark.parametrize(("sync", "aio", "services"), CLIENTS)
def test_every_public_rpc_has_a_method_on_both_clients(
    sync: type, aio: type, services: list[ServiceDescriptor]
) -> None:
    wanted = {_snake(rpc) for rpc in _rpcs(services)}
    assert _public(aio) == wanted
    assert _public(sync) == wanted


@pytest.mark.parametrize(("sync", "aio", "services"), CLIENTS)
def test_blocking_methods_take_the_same_arguments_as_the_asyncio_ones(
    sync: type, aio: type, services: list[ServiceDescriptor]
) -> None:
    for name in _public(aio):
        blocking = inspect.signature(getattr(sync, name))
        awaited = inspect.signature(getattr(aio, name))
        assert blocking.parameters == awaited.parameters, name
        assert blocking.return_annotation == awaited.return_annotation, name
        assert inspect.iscoroutinefunction(getattr(aio, name)), name
