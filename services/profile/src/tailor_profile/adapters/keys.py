"""Decryption keys from the consent service's KeyService, for a stated purpose.

The key service grants a key only while the subject's consent for the purpose is current,
and audits every grant and refusal, so keys are not cached here beyond one read.
"""

from __future__ import annotations

import grpc
import structlog

from tailor.consent.v1 import keys_pb2, keys_pb2_grpc
from tailor_core.consent_client import ServiceToken
from tailor_core.crypto import DataKey
from tailor_core.errors import PermissionDenied, Unavailable

log = structlog.get_logger(__name__)


class DecryptionKeys:
    def __init__(
        self, consent_addr: str, token: ServiceToken, timeout_seconds: float = 2.0
    ) -> None:
        self._channel = grpc.aio.insecure_channel(consent_addr)
        self._stub = keys_pb2_grpc.KeyServiceStub(self._channel)
        self._token = token
        self._timeout = timeout_seconds

    async def key(self, subject_id: str, purpose: str, key_id: str) -> DataKey | None:
        """The key, or None when it no longer exists (the subject was erased).

        Raises PermissionDenied when the key service refuses, Unavailable when it is away.
        """
        try:
            reply = await self._stub.GetDecryptionKey(
                keys_pb2.GetDecryptionKeyRequest(
                    subject_id=subject_id, purpose=purpose, key_id=key_id
                ),
                metadata=(("authorization", f"Bearer {self._token.value}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionDenied(
                    f"no key for {purpose}: the subject's consent is not current",
                    reason="CONSENT_REQUIRED",
                    metadata={"purpose": purpose},
                ) from None
            log.warning("decryption key unavailable", code=error.code().name)
            raise Unavailable("the key service is unavailable; retry") from None
        return DataKey(reply.key_id, reply.key)

    async def close(self) -> None:
        await self._channel.close()
