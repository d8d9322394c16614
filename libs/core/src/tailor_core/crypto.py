"""Field encryption with per-subject data keys (crypto-shredding, ARCHITECTURE.md §5).

Each subject has a 256-bit data key. Personal fields are sealed with AES-GCM under that
key, with the field name and key id bound as associated data, so a ciphertext cannot be
replayed into another field or read with another subject's key. Data keys are stored only
wrapped (AES key wrap, RFC 3394) under a master key; destroying a subject's wrapped key
makes every copy of its ciphertext unreadable, backups and stream replicas included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from tailor.common.v1.common_pb2 import EncryptedField

KEY_BYTES = 32
NONCE_BYTES = 12


class DecryptionError(Exception):
    """The ciphertext cannot be opened with this key (wrong key, wrong field, or tampered)."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """A subject's data key in memory; ``key_id`` travels with every ciphertext."""

    key_id: str
    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes")

    def __repr__(self) -> str:  # key material never reaches a log line
        return f"DataKey(key_id={self.key_id!r})"


def new_data_key(key_id: str) -> DataKey:
    return DataKey(key_id, AESGCM.generate_key(bit_length=256))


def _associated_data(key_id: str, field: str) -> bytes:
    return f"tailor/v1|{key_id}|{field}".encode()


def encrypt_field(key: DataKey, field: str, plaintext: str) -> EncryptedField:
    """Seal ``plaintext`` for ``field`` (e.g. ``"identify.email"``) under ``key``."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key.material).encrypt(
        nonce, plaintext.encode(), _associated_data(key.key_id, field)
    )
    return EncryptedField(ciphertext=ciphertext, nonce=nonce, key_id=key.key_id, field=field)


def decrypt_field(key: DataKey, sealed: EncryptedField) -> str:
    """Open a sealed field; raises :class:`DecryptionError` unless key, field and bytes match."""
    if sealed.key_id != key.key_id:
        raise DecryptionError("sealed under another key")
    try:
        plaintext = AESGCM(key.material).decrypt(
            sealed.nonce, sealed.ciphertext, _associated_data(sealed.key_id, sealed.field)
        )
    except InvalidTag:
        raise DecryptionError("ciphertext does not open with this key and field") from None
    return plaintext.decode()


def wrap_key(master_key: bytes, key: DataKey) -> bytes:
    """The data key wrapped under ``master_key`` (RFC 3394), for storage."""
    return aes_key_wrap(master_key, key.material)


def unwrap_key(master_key: bytes, key_id: str, wrapped: bytes) -> DataKey:
    """Recover a data key; raises :class:`DecryptionError` for the wrong master key."""
    try:
        return DataKey(key_id, aes_key_unwrap(master_key, wrapped))
    except InvalidUnwrap:
        raise DecryptionError("wrapped key does not open with this master key") from None
