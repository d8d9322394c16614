"""Channels to Tailor's services that carry credentials and raise the client's exceptions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from tailor_client.errors import from_rpc_error

Metadata = Sequence[tuple[str, str]]


class _Credentials(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the caller's credentials to every unary call and turns failures into
    :class:`~tailor_client.errors.TailorError` subclasses."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = tuple(metadata)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        merged = (*self._metadata, *(details.metadata or ()))
        details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, merged, details.credentials, details.wait_for_ready
        )
        call = await continuation(details, request)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None


def credentials(*, api_key: str = "", token: str = "") -> Metadata:
    """Metadata for an app's API key (``x-api-key``) or a service or staff token (bearer)."""
    if bool(api_key) == bool(token):
        raise ValueError("give exactly one of api_key and token")
    return (("x-api-key", api_key),) if api_key else (("authorization", f"Bearer {token}"),)


def open_channel(
    target: str,
    metadata: Metadata,
    *,
    tls: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (``host:port``) sending ``metadata`` on unary calls;
    plaintext unless ``tls`` credentials are given."""
    interceptors = [_Credentials(metadata)]
    if tls is not None:
        return grpc.aio.secure_channel(target, tls, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, interceptors=interceptors)
