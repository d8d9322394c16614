"""Tailor's Python client: send events and call every service, sync or asyncio.

- :class:`IngestClient` / :class:`AsyncIngestClient` send events the way analytics libraries
  do: message ids filled in, queued, batched, flushed in the background, retried safely.
- :class:`ProfileClient`, :class:`SegmentClient`, :class:`RecommendClient` and
  :class:`ConsentClient` (each with an ``Async…`` twin) call every public RPC of their
  service with keyword arguments, built from an address and a bearer token:
  ``ProfileClient("127.0.0.1:50053", token)``. Calls safe to repeat are retried when the
  failure may pass; every failure raises an exception of :mod:`tailor_client.errors`.
- :func:`open_channel` gives a channel carrying your credentials on which every generated
  stub (``tailor.<area>.v1.*_pb2_grpc``) works as is, typed, raising the same exceptions.
"""

from tailor_client.channel import credentials, open_channel
from tailor_client.consent import AsyncConsentClient, ConsentClient
from tailor_client.errors import FieldViolation, TailorError
from tailor_client.events import complete, customer_event
from tailor_client.ingest import AsyncIngestClient, IngestClient, QueueFull, Stats
from tailor_client.profile import AsyncProfileClient, ProfileClient
from tailor_client.recommend import (
    AsyncRecommendClient,
    Recommendation,
    Recommendations,
    RecommendClient,
)
from tailor_client.segment import AsyncSegmentClient, SegmentClient

__all__ = [
    "AsyncConsentClient",
    "AsyncIngestClient",
    "AsyncProfileClient",
    "AsyncRecommendClient",
    "AsyncSegmentClient",
    "ConsentClient",
    "FieldViolation",
    "IngestClient",
    "ProfileClient",
    "QueueFull",
    "RecommendClient",
    "Recommendation",
    "Recommendations",
    "SegmentClient",
    "Stats",
    "TailorError",
    "complete",
    "credentials",
    "customer_event",
    "open_channel",
]
