"""Who is calling: signed tokens for services and compliance staff, API keys for apps.

Tokens are JWTs (HS256) signed with ``TAILOR_TOKEN_SECRET``; their ``scopes`` claim lists
what the caller may do. Each RPC declares the scope it needs in the proto contract; the
auth interceptor compares the two.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import jwt

from tailor_core.errors import Unauthenticated

PrincipalKind = Literal["service", "compliance", "client"]
_KINDS: frozenset[str] = frozenset({"service", "compliance", "client"})
_ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32
#: How far in the future a token's ``iat`` may lie: the minting host's clock may run ahead.
MAX_CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    kind: PrincipalKind
    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _check_secret(secret: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"token secret must be at least {MIN_SECRET_LENGTH} characters")


def mint_token(
    secret: str,
    sub: str,
    kind: PrincipalKind,
    scopes: Iterable[str],
    ttl_seconds: float = 3600.0,
) -> str:
    """Sign a token for ``sub`` holding ``scopes``, valid for ``ttl_seconds``."""
    _check_secret(secret)
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
    now = int(time.time())
    claims = {
        "sub": sub,
        "kind": kind,
        "scopes": sorted(set(scopes)),
        "iat": now,
        "exp": now + int(ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


class TokenVerifier:
    """Checks signature, expiry and shape of a token and returns its principal.

    Verified tokens are remembered until they expire: a service calls with the same token
    thousands of times a second, and checking the signature each time is wasted work.
    """

    CACHE_SIZE = 4096

    def __init__(self, secret: str) -> None:
        _check_secret(secret)
        self._secret = secret
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires_at = self._verify(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                # PyJWT refuses any iat after its own clock, so a token minted on a host whose
                # clock runs a little ahead would fail at random; iat is checked below instead.
                options={"require": ["sub", "exp", "iat"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        sub, kind, scopes, iat = (claims.get(k) for k in ("sub", "kind", "scopes", "iat"))
        if (
            not isinstance(sub, str)
            or not sub
            or kind not in _KINDS
            or not isinstance(scopes, list)
            or not all(isinstance(scope, str) for scope in scopes)
            or not isinstance(iat, int | float)
        ):
            raise Unauthenticated("invalid token claims")
        if iat > time.time() + MAX_CLOCK_SKEW_SECONDS:
            raise Unauthenticated("token issued in the future")
        principal = Principal(kind=kind, id=sub, scopes=frozenset(scopes))
        return principal, float(claims["exp"])


class Authenticator(Protocol):
    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        """Return the caller, or raise :class:`Unauthenticated`."""
        ...


#: Checks an API key (``x-api-key``) and returns the client it belongs to.
ApiKeyVerifier = Callable[[str], Awaitable[Principal]]


class BearerTokenAuthenticator:
    """``authorization: Bearer <token>``; optionally ``x-api-key`` for client apps.

    A bearer token, when sent, decides alone: a bad token is refused even if an API key
    comes with it, so a caller never silently falls back to other credentials.
    """

    def __init__(self, verifier: TokenVerifier, api_keys: ApiKeyVerifier | None = None) -> None:
        self._verifier = verifier
        self._api_keys = api_keys

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization must be 'Bearer <token>'")
            return self._verifier.verify(token.strip())
        if self._api_keys is None:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        api_key = metadata.get("x-api-key", "")
        if not api_key:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <token>' or 'x-api-key'"
            )
        return await self._api_keys(api_key)
