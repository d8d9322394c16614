"""Subject data keys for encryption, from the consent service's KeyService, cached briefly."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable

import grpc
import structlog

from tailor.consent.v1 import keys_pb2, keys_pb2_grpc
from tailor_core.consent_client import ServiceToken
from tailor_core.crypto import DataKey
from tailor_core.errors import Unavailable

log = structlog.get_logger(__name__)


class SubjectErased(Exception):
    """The subject was erased: no key may be made for it again."""


class SubjectKeys:
    def __init__(
        self,
        consent_addr: str,
        token: ServiceToken,
        *,
        timeout_seconds: float = 2.0,
        max_entries: int = 50_000,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(consent_addr)
        self._stub = keys_pb2_grpc.KeyServiceStub(self._channel)
        self._token = token
        self._timeout = timeout_seconds
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()

    async def keys_for(self, subject_ids: Iterable[str]) -> dict[str, DataKey | None]:
        """Encryption key per subject; None for an erased subject (or an impossible id).

        Raises Unavailable when the key service cannot answer: nothing personal may leave
        ingest unencrypted, so the caller must retry.
        """
        wanted = list(dict.fromkeys(subject_ids))
        return dict(zip(wanted, await asyncio.gather(*map(self._key, wanted)), strict=True))

    async def _key(self, subject_id: str) -> DataKey | None:
        cached = self._cache.get(subject_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            reply = await self._stub.GetEncryptionKey(
                keys_pb2.GetEncryptionKeyRequest(subject_id=subject_id),
                metadata=(("authorization", f"Bearer {self._token.value}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,  # erased
                grpc.StatusCode.INVALID_ARGUMENT,  # an id no key can be made for
            ):
                return None
            log.warning("encryption key unavailable", code=error.code().name)
            raise Unavailable("the key service is unavailable; retry") from None
        key = DataKey(reply.key_id, reply.key)
        if reply.cache_ttl_seconds > 0:
            self._cache[subject_id] = (key, time.monotonic() + reply.cache_ttl_seconds)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return key

    def forget(self, subject_ids: Iterable[str]) -> None:
        """Drop cached keys (an erasure destroyed them)."""
        for subject_id in subject_ids:
            self._cache.pop(subject_id, None)

    async def close(self) -> None:
        await self._channel.close()
