"""Field encryption: only the right key opens the right field; erasing the key shreds it."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tailor_core.crypto import (
    DataKey,
    DecryptionError,
    decrypt_field,
    encrypt_field,
    new_data_key,
    unwrap_key,
    wrap_key,
)


@given(st.text(max_size=2000))
def test_a_sealed_field_opens_with_its_key(plaintext: str) -> None:
    key = new_data_key("subject-1#1")
    assert decrypt_field(key, encrypt_field(key, "identify.email", plaintext)) == plaintext


def test_sealing_twice_gives_different_ciphertexts() -> None:
    key = new_data_key("k#1")
    first = encrypt_field(key, "identify.name", "Alice")
    second = encrypt_field(key, "identify.name", "Alice")
    assert first.ciphertext != second.ciphertext
    assert b"Alice" not in first.SerializeToString()


def test_another_subjects_key_cannot_open_it() -> None:
    alice, mallory = new_data_key("alice#1"), new_data_key("alice#1")
    sealed = encrypt_field(alice, "identify.email", "alice@example.com")
    with pytest.raises(DecryptionError):
        decrypt_field(mallory, sealed)


def test_a_ciphertext_moved_to_another_field_does_not_open() -> None:
    key = new_data_key("k#1")
    sealed = encrypt_field(key, "identify.email", "alice@example.com")
    sealed.field = "identify.name"
    with pytest.raises(DecryptionError):
        decrypt_field(key, sealed)


def test_a_tampered_ciphertext_does_not_open() -> None:
    key = new_data_key("k#1")
    sealed = encrypt_field(key, "identify.phone", "+44 20 7946 0000")
    sealed.ciphertext = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionError):
        decrypt_field(key, sealed)


def test_wrapped_keys_open_only_under_their_master_key() -> None:
    master, other = os.urandom(32), os.urandom(32)
    key = new_data_key("k#1")
    wrapped = wrap_key(master, key)
    assert key.material not in wrapped
    assert unwrap_key(master, "k#1", wrapped) == key
    with pytest.raises(DecryptionError):
        unwrap_key(other, "k#1", wrapped)


def test_key_material_never_appears_in_its_repr() -> None:
    key = DataKey("k#1", b"\x01" * 32)
    assert "\\x01" not in repr(key)
    assert "k#1" in repr(key)
