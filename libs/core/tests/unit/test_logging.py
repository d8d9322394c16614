"""Every log line is JSON with service and ids, and carries nothing personal."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
import structlog

from tailor_core.auth import BearerTokenAuthenticator, TokenVerifier, mint_token
from tailor_core.logs import bind_event_id, bind_request_id, configure_logging, current_request_id
from tailor_core.server import ServiceBinding, build_server

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[LogLines]:
    """Configure logging for service "profile" and read back the JSON lines written so far."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("profile")

    def read() -> list[dict[str, Any]]:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    yield read
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_personal_values_are_redacted_however_the_keys_are_spelt_and_nested(
    log_lines: LogLines,
) -> None:
    structlog.get_logger().info(
        "profile merged",
        customerEmail="alice@example.com",
        **{"billing-address": "1 Main St"},
        change={"traits": {"plan": "gold"}, "items": [{"firstName": "Alice", "sku": "A-1"}]},
        devices=({"ip_address": "10.1.2.3", "os": "ios"},),
        authorization="Bearer eyJhbGciOi",
        subject_token="4f0c2e",
        count=3,
    )
    [line] = log_lines()
    assert line["customerEmail"] == "[redacted]"
    assert line["billing-address"] == "[redacted]"
    assert line["change"] == {
        "traits": "[redacted]",
        "items": [{"firstName": "[redacted]", "sku": "A-1"}],
    }
    assert line["devices"] == [{"ip_address": "[redacted]", "os": "ios"}]
    assert line["authorization"] == "[redacted]"
    assert (line["subject_token"], line["count"]) == ("4f0c2e", 3)
    text = json.dumps(line)
    assert "Alice" not in text
    assert "Main St" not in text
    assert "eyJhbGciOi" not in text


def test_email_addresses_in_messages_and_exception_text_are_cut_out(log_lines: LogLines) -> None:
    log = structlog.get_logger()
    try:
        raise LookupError("duplicate key: Key (email)=(alice@example.com) already exists")
    except LookupError:
        log.exception("import failed for bob.smith@mail.example.org")
    [line] = log_lines()
    assert line["event"] == "import failed for [redacted]"
    assert "LookupError" in line["exception"]
    assert "Key (email)=([redacted])" in line["exception"]
    assert "example" not in json.dumps(line)


def test_standard_library_lines_are_json_with_service_and_redacted(log_lines: LogLines) -> None:
    logging.getLogger("nats.aio.client").warning("reconnect as %s failed", "carol@example.net")
    [line] = log_lines()
    assert line["service"] == "profile"
    assert line["level"] == "warning"
    assert line["logger"] == "nats.aio.client"
    assert line["event"] == "reconnect as [redacted] failed"
    assert "timestamp" in line


def test_configuring_twice_writes_each_line_once(log_lines: LogLines) -> None:
    configure_logging("profile", "debug")
    structlog.get_logger().debug("structlog line")
    logging.getLogger("grpc").debug("stdlib line")
    assert [line["event"] for line in log_lines()] == ["structlog line", "stdlib line"]


def test_level_filters_lines_below_it(log_lines: LogLines) -> None:
    configure_logging("profile", "warning")
    structlog.get_logger().info("too chatty")
    logging.getLogger("asyncio").info("too chatty as well")
    structlog.get_logger().warning("worth reading")
    assert [line["event"] for line in log_lines()] == ["worth reading"]


def test_lines_from_other_threads_carry_the_service(log_lines: LogLines) -> None:
    thread = threading.Thread(target=lambda: structlog.get_logger().info("from a thread"))
    thread.start()
    thread.join()
    [line] = log_lines()
    assert line["service"] == "profile"


def test_request_and_event_ids_tag_lines_inside_their_blocks_only(log_lines: LogLines) -> None:
    log = structlog.get_logger()
    with bind_request_id("req-1"):
        with bind_event_id("evt-9"):
            log.info("inside both")
        log.info("inside request")
    log.info("outside")
    inside, request_only, outside = log_lines()
    assert (inside["request_id"], inside["event_id"]) == ("req-1", "evt-9")
    assert request_only["request_id"] == "req-1"
    assert "event_id" not in request_only
    assert "request_id" not in outside
    assert current_request_id() is None


SECRET = "l" * 40
SERVICE = "tailor.test.v1.LogProbe"


async def _echo(request: bytes, context: Any) -> bytes:
    structlog.get_logger().info("handling")
    return request


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
    server = build_server(
        service_name="profile",
        services=[
            ServiceBinding(lambda _s, srv: srv.add_generic_rpc_handlers((generic,)), None, SERVICE)
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET)),
        host="127.0.0.1",
        port=0,
        scope_resolver=lambda _method: "probe",
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened
    await server.stop(0)


def _metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    token = mint_token(SECRET, "segment", "service", ["probe"])
    return (("authorization", f"Bearer {token}"), ("x-request-id", request_id))


async def test_each_rpc_logs_one_line_with_method_code_duration_and_request_id_only(
    channel: grpc.aio.Channel, log_lines: LogLines
) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Echo")(
        b"dave@example.com likes red", metadata=_metadata("req-7f3a")
    )
    assert await call == b"dave@example.com likes red"
    assert ("x-request-id", "req-7f3a") in tuple(await call.trailing_metadata() or ())
    lines = log_lines()
    [rpc] = [line for line in lines if line["event"] == "rpc"]
    assert rpc["method"] == f"/{SERVICE}/Echo"
    assert rpc["code"] == "OK"
    assert rpc["duration_ms"] >= 0
    assert rpc["request_id"] == "req-7f3a"
    [handling] = [line for line in lines if line["event"] == "handling"]
    assert handling["request_id"] == "req-7f3a"
    assert "dave" not in json.dumps(lines)


async def test_a_request_id_that_is_not_an_id_is_replaced_and_never_logged(
    channel: grpc.aio.Channel, log_lines: LogLines
) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Echo")(b"", metadata=_metadata("erin@example.com"))
    await call
    echoed = dict(tuple(await call.trailing_metadata() or ()))["x-request-id"]
    [rpc] = [line for line in log_lines() if line["event"] == "rpc"]
    assert rpc["request_id"] == echoed
    assert "erin" not in echoed
    assert len(echoed) == 36  # a fresh uuid4
