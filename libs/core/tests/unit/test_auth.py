"""Who may call what: tokens, API keys, and the scope each RPC declares (fail closed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import jwt
import pytest

from tailor_core.auth import (
    MAX_CLOCK_SKEW_SECONDS,
    BearerTokenAuthenticator,
    Principal,
    TokenVerifier,
    mint_token,
)
from tailor_core.errors import Unauthenticated
from tailor_core.interceptors import current_principal, scope_from_proto
from tailor_core.server import GrpcServer, ServiceBinding, build_server

SECRET = "a" * 64  # long enough for the HS512 case too
SERVICE = "tailor.test.v1.AuthProbe"
API_KEYS = {
    "key-web-shop": Principal("client", "source-web-shop", frozenset({"events:write"})),
    "key-dashboard": Principal("client", "source-dashboard", frozenset({"probe:read"})),
}
client_stream_opened = asyncio.Event()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "svc",
        "kind": "service",
        "scopes": ["probe:read"],
        "iat": now,
        "exp": now + 60,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def known_api_key(key: str) -> Principal:
    if key in API_KEYS:
        return API_KEYS[key]
    raise Unauthenticated("unknown API key")


# One handler of each kind, each answering with the caller the interceptor established.
async def who_unary(request: bytes, context: Any) -> bytes:
    return current_principal().id.encode()


async def who_server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield current_principal().id.encode()


async def who_client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    client_stream_opened.set()
    return b"".join([r async for r in requests]) + current_principal().id.encode()


async def who_bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request + current_principal().id.encode()


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(who_unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(who_server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(who_client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(who_bidi),
    "Undeclared": grpc.unary_unary_rpc_method_handler(who_unary),
}
SCOPES = {f"/{SERVICE}/{name}": "probe:read" for name in HANDLERS if name != "Undeclared"}


async def _serve(scope_resolver: Callable[[str], str | None]) -> GrpcServer:
    generic = grpc.method_handlers_generic_handler(SERVICE, HANDLERS)
    built = build_server(
        service_name="auth-test",
        services=[
            ServiceBinding(lambda _s, srv: srv.add_generic_rpc_handlers((generic,)), None, SERVICE)
        ],
        authenticator=BearerTokenAuthenticator(TokenVerifier(SECRET), api_keys=known_api_key),
        host="127.0.0.1",
        port=0,
        scope_resolver=scope_resolver,
    )
    await built.start()
    return built


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = await _serve(SCOPES.get)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened
    await server.stop(0)


async def _call(
    channel: grpc.aio.Channel, kind: str, metadata: Any, requests: tuple[bytes, ...] = (b"x:",)
) -> bytes:
    """Call ``kind``; streaming kinds send ``requests``.

    Calls that should be refused send no messages: a grpc.aio client whose write races the
    server's early end reports INTERNAL instead of the server's status (grpc/grpc#36066).
    """
    method = f"/{SERVICE}/{kind}"
    if kind == "ServerStream":
        return b"".join([r async for r in channel.unary_stream(method)(b"", metadata=metadata)])
    if kind == "ClientStream":
        return bytes(await channel.stream_unary(method)(iter(requests), metadata=metadata))
    if kind == "Bidi":
        call = channel.stream_stream(method)(iter(requests), metadata=metadata)
        return b"".join([r async for r in call])
    return bytes(await channel.unary_unary(method)(b"", metadata=metadata))


KINDS = ["Unary", "ServerStream", "ClientStream", "Bidi"]


@pytest.mark.parametrize("kind", KINDS)
async def test_caller_with_the_declared_scope_is_served_by_every_handler_kind(
    channel: grpc.aio.Channel, kind: str
) -> None:
    token = mint_token(SECRET, "profile", "service", ["probe:read"])
    assert (await _call(channel, kind, bearer(token))).endswith(b"profile")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("not-a-jwt"), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(mint_token(SECRET, "s", "service", ["probe:read"], -1)), "UNAUTHENTICATED"),
        (bearer(mint_token("b" * 40, "s", "service", ["probe:read"])), "UNAUTHENTICATED"),
        ((("authorization", "Basic c3ZjOnB3"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-api-key", "stolen-key"),), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(mint_token(SECRET, "s", "service", ["probe:write"])), "PERMISSION_DENIED"),
        ((("x-api-key", "key-web-shop"),), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=[
        "no credentials",
        "garbage token",
        "expired token",
        "token signed with another secret",
        "not a bearer token",
        "unknown api key",
        "token without the scope",
        "api key without the scope",
    ],
)
async def test_bad_credentials_and_missing_scopes_are_refused_for_every_handler_kind(
    channel: grpc.aio.Channel, kind: str, metadata: Any, code: grpc.StatusCode | str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, kind, metadata, requests=())
    expected = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode[code]
    assert caught.value.code() == expected


async def test_a_refused_client_stream_is_refused_before_its_handler_runs(
    channel: grpc.aio.Channel,
) -> None:
    client_stream_opened.clear()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "ClientStream", bearer("not-a-jwt"), requests=())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not client_stream_opened.is_set()


async def test_rpc_without_a_declared_scope_is_refused_even_to_a_caller_with_every_scope(
    channel: grpc.aio.Channel,
) -> None:
    token = mint_token(SECRET, "root", "compliance", ["probe:read", "admin", "*"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Undeclared", bearer(token))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_default_resolver_refuses_methods_missing_from_the_proto_contracts() -> None:
    server = await _serve(scope_from_proto)
    token = mint_token(SECRET, "root", "service", ["probe:read"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(opened, "Unary", bearer(token))
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_default_resolver_reads_the_required_scope_option_of_the_contract() -> None:
    from tailor.consent.v1 import consent_pb2  # noqa: F401  (registers the descriptors)

    assert scope_from_proto("/tailor.consent.v1.ConsentService/CheckConsent") == "consent:check"
    assert scope_from_proto("/tailor.consent.v1.ConsentService/NoSuchRpc") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_api_key_caller_with_the_scope_is_served_and_known_to_the_handler(
    channel: grpc.aio.Channel, kind: str
) -> None:
    reply = await _call(channel, kind, (("x-api-key", "key-dashboard"),))
    assert reply.endswith(b"source-dashboard")


async def test_a_bad_token_is_not_rescued_by_a_good_api_key() -> None:
    authenticator = BearerTokenAuthenticator(TokenVerifier(SECRET), api_keys=known_api_key)
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(
            {"authorization": "Bearer not-a-jwt", "x-api-key": "key-web-shop"}
        )


def test_token_minted_on_a_host_whose_clock_runs_ahead_is_accepted() -> None:
    ahead = int(time.time()) + 5
    token = jwt.encode(claims(iat=ahead, exp=ahead + 60), SECRET, algorithm="HS256")
    assert TokenVerifier(SECRET).verify(token).id == "svc"


@pytest.mark.parametrize(
    ("token_claims", "algorithm"),
    [
        (claims(iat=int(time.time()) + MAX_CLOCK_SKEW_SECONDS + 600), "HS256"),
        (claims(kind="root"), "HS256"),
        (claims(scopes="probe:read"), "HS256"),
        (claims(scopes=["probe:read", 7]), "HS256"),
        (claims(sub=""), "HS256"),
        (claims(exp=None), "HS256"),
        (claims(iat=None), "HS256"),
        (claims(), "HS512"),
    ],
    ids=[
        "issued far in the future",
        "unknown kind",
        "scopes not a list",
        "scope not a string",
        "empty subject",
        "no expiry",
        "no issue time",
        "other algorithm",
    ],
)
def test_malformed_tokens_are_refused(token_claims: dict[str, Any], algorithm: str) -> None:
    token = jwt.encode(token_claims, SECRET, algorithm=algorithm)
    with pytest.raises(Unauthenticated):
        TokenVerifier(SECRET).verify(token)


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(claims(), key=None, algorithm="none")
    with pytest.raises(Unauthenticated):
        TokenVerifier(SECRET).verify(token)


def test_minting_refuses_an_unknown_kind_and_a_short_secret() -> None:
    with pytest.raises(ValueError, match="kind"):
        mint_token(SECRET, "x", "root", [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 32"):
        mint_token("short", "x", "service", [])
