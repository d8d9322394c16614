"""API key secrets, their checks, and the token bucket that rate-limits a key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tailor_core.errors import InvalidArgument
from tailor_ingest.domain.api_keys import (
    ApiKey,
    TokenBucket,
    check_key_fields,
    key_id_of,
    new_secret,
    secret_matches,
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_a_new_secret_names_its_key_and_matches_only_itself() -> None:
    key_id, secret, digest = new_secret()
    key = ApiKey(key_id=key_id, source_id="web", scopes=("events:write",), secret_sha256=digest)
    assert key_id_of(secret) == key_id
    assert secret_matches(key, secret)
    assert not secret_matches(key, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert new_secret()[1] != secret


@pytest.mark.parametrize(
    "presented", ["", "nodot", "k123.x", "K0123456789abcdef.x", "k0123456789abcdef."]
)
def test_a_malformed_secret_claims_no_key(presented: str) -> None:
    assert key_id_of(presented) is None


def test_revoked_and_expired_keys_are_not_usable() -> None:
    base = ApiKey(key_id="k1", source_id="web", scopes=())
    assert base.usable_at(NOW)
    revoked = ApiKey(key_id="k1", source_id="web", scopes=(), revoked_at=NOW)
    assert not revoked.usable_at(NOW)
    expired = ApiKey(key_id="k1", source_id="web", scopes=(), expires_at=NOW - timedelta(1))
    assert not expired.usable_at(NOW)


def test_every_bad_key_field_is_named() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_key_fields(
            source_id="Web Shop",
            scopes=("events:write", "consent:admin"),
            rate_limit_per_second=-1,
            burst=-2,
            label="x" * 201,
            expires_at=NOW - timedelta(seconds=1),
            now=NOW,
        )
    assert [v.field for v in caught.value.field_violations] == [
        "source_id",
        "scopes[1]",
        "rate_limit_per_second",
        "burst",
        "label",
        "expires_at",
    ]


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.take(20, now=0.0) == 0.0
    wait = bucket.take(5, now=0.0)
    assert wait == pytest.approx(0.5)
    assert bucket.take(5, now=0.5) == 0.0
    assert bucket.take(1, now=0.5) > 0


def test_a_request_larger_than_the_burst_waits_for_a_full_bucket_then_leaves_a_debt() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    bucket.take(20, now=0.0)
    assert bucket.take(500, now=0.0) == pytest.approx(2.0)
    assert bucket.take(500, now=2.0) == 0.0
    assert bucket.take(1, now=2.0) == pytest.approx(48.1)


def test_a_smaller_burst_takes_effect_at_once() -> None:
    bucket = TokenBucket(rate=10, burst=100, now=0.0)
    bucket.reconfigure(10, 5)
    assert bucket.take(5, now=0.0) == 0.0
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)
