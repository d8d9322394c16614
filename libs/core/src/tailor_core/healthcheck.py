"""``python -m tailor_core.healthcheck``: exit 0 when the local service answers SERVING.

For container health checks (Docker HEALTHCHECK); Kubernetes probes use gRPC natively.
Reads TAILOR_GRPC_PORT (or the first argument) and checks 127.0.0.1.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(port: int, service: str = "", timeout: float = 3.0) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TAILOR_GRPC_PORT", "")
    if not port.isdigit():
        print("usage: python -m tailor_core.healthcheck PORT (or set TAILOR_GRPC_PORT)")
        raise SystemExit(2)
    raise SystemExit(0 if check(int(port)) else 1)


if __name__ == "__main__":
    main()
