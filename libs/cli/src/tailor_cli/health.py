"""Asking services for their gRPC health."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = "SERVING"
UNREACHABLE = "UNREACHABLE"


async def check(address: str, timeout: float = 2.0) -> str:
    """The overall health of the server at ``address``: SERVING, NOT_SERVING, UNREACHABLE…"""
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError:
        return UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def check_all(addresses: dict[str, str], timeout: float = 2.0) -> dict[str, str]:
    """Health of every named address, checked concurrently."""
    results = await asyncio.gather(*(check(a, timeout) for a in addresses.values()))
    return dict(zip(addresses, results, strict=True))
