"""Bounded in-flight work, and page tokens that only work for the filters they came with."""

from __future__ import annotations

import asyncio

import pytest

from tailor_core.errors import InvalidArgument, ResourceExhausted
from tailor_ingest.capacity import Capacity
from tailor_ingest.entrypoints import paging


async def test_capacity_refuses_at_once_beyond_its_limit() -> None:
    capacity = Capacity(10)
    capacity.try_reserve(8)
    with pytest.raises(ResourceExhausted):
        capacity.try_reserve(3)
    await capacity.release(8)
    capacity.try_reserve(10)
    assert capacity.in_flight == 10


async def test_a_waiting_stream_proceeds_when_room_is_freed() -> None:
    capacity = Capacity(10)
    capacity.try_reserve(10)
    waiter = asyncio.create_task(capacity.reserve(4))
    await asyncio.sleep(0)  # one scheduling turn: the waiter has run and is still blocked
    assert not waiter.done()
    await capacity.release(10)
    await asyncio.wait_for(waiter, 1)
    assert capacity.in_flight == 4


def test_a_page_token_round_trips_for_the_same_filters() -> None:
    token = paging.issue(["2026-11-25T00:00:00+00:00", "k1"], ["web", False])
    assert paging.read(token, ["web", False]) == ["2026-11-25T00:00:00+00:00", "k1"]
    assert paging.read("", ["web", False]) is None


@pytest.mark.parametrize("token", ["garbage", "eyJ9", paging.issue(["x"], ["other", True])])
def test_a_foreign_or_stale_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        paging.read(token, ["web", False])
    assert caught.value.field_violations[0].field == "page.page_token"


def test_page_sizes_have_a_default_and_a_cap() -> None:
    assert paging.page_size(0, 50, 500) == 50
    assert paging.page_size(-3, 50, 500) == 50
    assert paging.page_size(10_000, 50, 500) == 500
