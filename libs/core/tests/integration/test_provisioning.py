"""Stream and consumer provisioning is declarative and idempotent."""

from __future__ import annotations

import dataclasses

import pytest
from nats.js import JetStreamContext

from tailor_core.bus import (
    ConsumerSpec,
    Provisioned,
    platform_streams,
    provision_consumer,
    provision_streams,
)
from tailor_core.streams import Naming, Stream

pytestmark = [pytest.mark.integration, pytest.mark.embedded_smoke]


async def test_provisioning_twice_changes_nothing(js: JetStreamContext, naming: Naming) -> None:
    specs = platform_streams(naming)
    first = await provision_streams(js, specs)
    assert set(first.values()) == {Provisioned.CREATED}
    assert set(first) == {naming.stream_name(stream) for stream in Stream}
    events = naming.stream_name(Stream.EVENTS)
    await js.publish(naming.event_subject("user-1", "Order Completed"), b"x")
    before = await js.stream_info(events)

    second = await provision_streams(js, specs)

    assert set(second.values()) == {Provisioned.UNCHANGED}
    after = await js.stream_info(events)
    assert after.config == before.config
    assert after.created == before.created
    assert after.state.messages == before.state.messages == 1


async def test_a_changed_stream_spec_is_applied_in_place(
    js: JetStreamContext, naming: Naming
) -> None:
    specs = platform_streams(naming)
    await provision_streams(js, specs)
    await js.publish(naming.event_subject("user-1", "Product Viewed"), b"kept")
    longer_window = [dataclasses.replace(s, duplicate_window_seconds=300.0) for s in specs[:1]]

    result = await provision_streams(js, longer_window)

    assert list(result.values()) == [Provisioned.UPDATED]
    info = await js.stream_info(specs[0].name)
    assert info.config.duplicate_window == 300.0
    assert info.state.messages == 1  # an update never loses the log


async def test_consumer_provisioning_is_idempotent(js: JetStreamContext, naming: Naming) -> None:
    await provision_streams(js, platform_streams(naming))
    spec = ConsumerSpec(
        stream=naming.stream_name(Stream.EVENTS),
        durable="profile_projection",
        filter_subject=naming.partition_filter(Stream.EVENTS, 2),
    )
    assert await provision_consumer(js, spec) == Provisioned.CREATED
    assert await provision_consumer(js, spec) == Provisioned.UNCHANGED
    slower = dataclasses.replace(spec, ack_wait_seconds=60.0)
    assert await provision_consumer(js, slower) == Provisioned.UPDATED
    info = await js.consumer_info(spec.stream, spec.durable)
    assert info.config.ack_wait == 60.0
    assert info.config.filter_subject == naming.partition_filter(Stream.EVENTS, 2)
