"""The consent service's own settings, on top of the core's."""

from __future__ import annotations

import base64
import binascii

from pydantic import SecretStr, field_validator

from tailor_core.settings import ServiceSettings


def parse_master_keys(spec: str) -> dict[str, bytes]:
    """``id1:base64,id2:base64`` -> {id: 32-byte key}."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key_id, _, encoded = item.partition(":")
        try:
            material = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"master key {key_id!r} is not base64") from None
        if not key_id or len(material) != 32:
            raise ValueError(f"master key {key_id!r} must be 32 bytes, base64-encoded")
        keys[key_id] = material
    if not keys:
        raise ValueError("give at least one master key as id:base64")
    return keys


class ConsentSettings(ServiceSettings):
    #: Master keys wrapping the subject data keys: ``id:base64(32 bytes)``, comma-separated.
    #: Keep old ones listed until a rotation has re-wrapped every data key.
    master_keys: SecretStr
    #: The master key that wraps new data keys.
    master_key_id: str
    #: Services that hold personal data: a data-subject request completes when all confirmed.
    data_holders: str = "consent,ingest,profile,segment,recommend"

    @field_validator("master_keys")
    @classmethod
    def _valid_keys(cls, value: SecretStr) -> SecretStr:
        parse_master_keys(value.get_secret_value())
        return value

    def holders(self) -> list[str]:
        return [name.strip() for name in self.data_holders.split(",") if name.strip()]

    def master_key_ring(self) -> dict[str, bytes]:
        return parse_master_keys(self.master_keys.get_secret_value())
