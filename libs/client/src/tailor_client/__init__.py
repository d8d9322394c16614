"""Tailor's Python client: send events and call every service, sync or asyncio.

- :class:`IngestClient` / :class:`AsyncIngestClient` send events the way analytics libraries
  do: message ids filled in, queued, batched, flushed in the background, retried safely.
- :func:`open_channel` gives a channel carrying your credentials on which every generated
  stub (``tailor.<area>.v1.*_pb2_grpc``) works as is, typed, raising the exceptions of
  :mod:`tailor_client.errors`.
"""

from tailor_client.channel import credentials, open_channel
from tailor_client.errors import FieldViolation, TailorError
from tailor_client.events import complete, customer_event
from tailor_client.ingest import AsyncIngestClient, IngestClient, QueueFull, Stats

__all__ = [
    "AsyncIngestClient",
    "FieldViolation",
    "IngestClient",
    "QueueFull",
    "Stats",
    "TailorError",
    "complete",
    "credentials",
    "customer_event",
    "open_channel",
]
