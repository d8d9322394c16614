"""What the client's integration tests share: tokens for the test platform's secret."""

from __future__ import annotations

from tailor_core.auth import mint_token
from tailor_core.testing.platform import TEST_SECRET


def token(*scopes: str, kind: str = "compliance") -> str:
    """A bearer token (without ``Bearer``) holding ``scopes``, signed for the test platform."""
    return mint_token(TEST_SECRET, "client-tests", kind, list(scopes))  # type: ignore[arg-type]
