"""Prometheus metrics shared by every service, served on their own HTTP port."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

GRPC_REQUESTS = Counter(
    "tailor_grpc_requests",
    "gRPC requests handled, by method and status code",
    ["service", "method", "code"],
)
GRPC_SECONDS = Histogram(
    "tailor_grpc_request_seconds",
    "gRPC request handling time in seconds",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Consumers: what an operator watches to see that replicas share the work and that
# redelivery is absorbed (duplicates) rather than counted twice.
INBOX_APPLIED = Counter(
    "tailor_inbox_events_applied",
    "Events applied by a durable consumer for the first time",
    ["consumer"],
)
INBOX_DUPLICATES = Counter(
    "tailor_inbox_duplicates",
    "Redelivered or repeated events a durable consumer recognised and skipped",
    ["consumer"],
)
INBOX_DEAD_LETTERED = Counter(
    "tailor_inbox_dead_lettered",
    "Events a durable consumer gave up on and sent to its dead-letter subject",
    ["consumer"],
)
PARTITIONS_OWNED = Gauge(
    "tailor_partitions_owned",
    "Stream partitions this replica currently consumes",
    ["service"],
)


@dataclass
class MetricsServer:
    """The ``/metrics`` HTTP endpoint; ``port`` is 0 when it is turned off."""

    port: int
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    async def stop(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            # shutdown() waits for the serving thread's next poll (up to 0.5 s): off the loop.
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve the default registry on ``host:port``; 0 turns metrics off."""
    if port == 0:
        return MetricsServer(0)
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return MetricsServer(server.server_port, server, thread)
