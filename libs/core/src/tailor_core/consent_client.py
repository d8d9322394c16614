"""The consent gate every service holds (ARCHITECTURE.md §5): "may I process X for P?".

* Answers come from a local cache, filled by remote ``CheckConsent`` calls on a miss.
* The cache is kept coherent by the CONSENT stream: every recorded decision invalidates the
  cached answer for its subject and purpose, so a withdrawal takes effect as fast as NATS
  delivers it. A remote answer that raced with an invalidation is not cached.
* Deny whenever no current answer can be had: the consent service is unreachable or
  unhealthy (probed every second), the call times out, the purpose is unknown, or the NATS
  connection that keeps the cache coherent has dropped since an answer was cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from tailor.consent.v1 import consent_pb2, consent_pb2_grpc
from tailor_core.auth import PrincipalKind, mint_token
from tailor_core.envelopes import parse
from tailor_core.streams import Naming, Stream, subject_token

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConsentAnswer:
    allowed: bool
    reason: str  # the consent service's reason, or consent_unavailable / timeout / invalid_request
    cached: bool = False


DENY_UNAVAILABLE = ConsentAnswer(False, "consent_unavailable")
#: Most pairs one BatchCheckConsent call may carry.
BATCH_CHECK_LIMIT = 1000
#: The reason the consent service gives for a purpose allowed to everyone (``necessary``).
NECESSARY = "necessary"
#: How long such a purpose is taken as allowed without asking again.
NECESSARY_REMEMBERED_SECONDS = 600.0


class ServiceToken:
    """A self-minted service token, renewed before it expires."""

    def __init__(
        self, secret: str, service: str, scopes: list[str], kind: PrincipalKind = "service"
    ) -> None:
        self._secret, self._service, self._scopes, self._kind = secret, service, scopes, kind
        self._ttl = 3600.0
        self._minted_at = -1e9
        self._value = ""

    @property
    def value(self) -> str:
        if time.monotonic() - self._minted_at > self._ttl / 2:
            self._value = mint_token(
                self._secret, self._service, self._kind, self._scopes, self._ttl
            )
            self._minted_at = time.monotonic()
        return self._value


@dataclass(slots=True)
class _Entry:
    answer: ConsentAnswer
    expires_at: float
    reconnects: int


class ConsentClient:
    def __init__(
        self,
        *,
        nats: NatsClient,
        naming: Naming,
        consent_addr: str,
        token: ServiceToken,
        timeout_seconds: float = 0.5,
        max_entries: int = 100_000,
        health_interval_seconds: float = 1.0,
    ) -> None:
        self._nats = nats
        self._naming = naming
        self._token = token
        self._timeout = timeout_seconds
        self._max_entries = max_entries
        self._health_interval = health_interval_seconds
        self._channel = grpc.aio.insecure_channel(consent_addr)
        self._stub = consent_pb2_grpc.ConsentServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._generation: dict[tuple[str, str], int] = {}
        self._healthy = False
        self._necessary: dict[str, float] = {}  # purpose -> until (monotonic)
        self._subscription: object | None = None
        self._prober: asyncio.Task[None] | None = None
        self.invalidations = 0

    async def start(self) -> None:
        """Subscribe to decisions and start probing the consent service's health."""
        self._subscription = await self._nats.subscribe(
            self._naming.all_subjects(Stream.CONSENT), cb=self._on_decision
        )
        await self._probe_once()
        self._prober = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        if self._subscription is not None:
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]
        await self._channel.close()

    async def allowed(self, subject_id: str, purpose: str) -> bool:
        return (await self.check(subject_id, purpose)).allowed

    def _always_allowed(self, purpose: str) -> bool:
        """A purpose the consent service answered "necessary" for lately (allowed for every
        subject whatever the ledger says, e.g. fulfilling an order): it needs no answer per
        subject, so it goes on being allowed while the consent service is away."""
        until = self._necessary.get(purpose)
        return until is not None and until > time.monotonic()

    def _learn(self, purpose: str, answer: ConsentAnswer) -> None:
        if answer.allowed and answer.reason == NECESSARY:
            self._necessary[purpose] = time.monotonic() + NECESSARY_REMEMBERED_SECONDS

    async def check(self, subject_id: str, purpose: str) -> ConsentAnswer:
        """The current answer for one subject and purpose; deny when there is none."""
        if self._always_allowed(purpose):
            return ConsentAnswer(True, NECESSARY, cached=True)
        if not self._healthy or not self._nats.is_connected:
            return DENY_UNAVAILABLE
        key = (subject_token(subject_id), purpose) if subject_id else ("", purpose)
        entry = self._cache.get(key)
        reconnects = int(self._nats.stats.get("reconnects", 0))
        if (
            entry is not None
            and entry.expires_at > time.monotonic()
            and entry.reconnects == reconnects
        ):
            self._cache.move_to_end(key)
            return ConsentAnswer(entry.answer.allowed, entry.answer.reason, cached=True)
        generation = self._generation.get(key, 0)
        answer, ttl = await self._remote(subject_id, purpose)
        self._learn(purpose, answer)
        if ttl > 0 and self._generation.get(key, 0) == generation:
            self._remember(key, _Entry(answer, time.monotonic() + ttl, reconnects))
        return answer

    async def check_many(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], ConsentAnswer]:
        """Answers for many (subject id, purpose) pairs: cached ones locally, the misses in
        one ``BatchCheckConsent`` call per thousand. Deny whatever cannot be answered."""
        wanted = list(dict.fromkeys(pairs))
        answers: dict[tuple[str, str], ConsentAnswer] = {}
        for pair in wanted:
            if self._always_allowed(pair[1]):
                answers[pair] = ConsentAnswer(True, NECESSARY, cached=True)
        wanted = [pair for pair in wanted if pair not in answers]
        if not self._healthy or not self._nats.is_connected:
            return {**answers, **dict.fromkeys(wanted, DENY_UNAVAILABLE)}
        reconnects = int(self._nats.stats.get("reconnects", 0))
        now = time.monotonic()
        misses: list[tuple[str, str]] = []
        for subject_id, purpose in wanted:
            key = (subject_token(subject_id), purpose) if subject_id else ("", purpose)
            entry = self._cache.get(key)
            if entry is not None and entry.expires_at > now and entry.reconnects == reconnects:
                answers[(subject_id, purpose)] = ConsentAnswer(
                    entry.answer.allowed, entry.answer.reason, cached=True
                )
            else:
                misses.append((subject_id, purpose))
        for start in range(0, len(misses), BATCH_CHECK_LIMIT):
            chunk = misses[start : start + BATCH_CHECK_LIMIT]
            keys = [(subject_token(s), p) if s else ("", p) for s, p in chunk]
            generations = [self._generation.get(key, 0) for key in keys]
            remote = await self._remote_many(chunk)
            for pair, key, generation, (answer, ttl) in zip(
                chunk, keys, generations, remote, strict=True
            ):
                answers[pair] = answer
                self._learn(pair[1], answer)
                if ttl > 0 and self._generation.get(key, 0) == generation:
                    self._remember(key, _Entry(answer, time.monotonic() + ttl, reconnects))
        return answers

    async def _remote_many(
        self, pairs: Sequence[tuple[str, str]]
    ) -> list[tuple[ConsentAnswer, float]]:
        if len(pairs) == 1:
            return [await self._remote(*pairs[0])]
        request = consent_pb2.BatchCheckConsentRequest(
            checks=[consent_pb2.CheckConsentRequest(subject_id=s, purpose=p) for s, p in pairs]
        )
        try:
            reply = await self._stub.BatchCheckConsent(
                request,
                metadata=(("authorization", f"Bearer {self._token.value}"),),
                timeout=self._timeout * 4,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                # One bad pair spoils the batch: ask one by one so the others get answers.
                return [await self._remote(s, p) for s, p in pairs]
            reason = "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else ""
            log.warning("consent batch check failed; denying", code=code.name if code else "?")
            denied = ConsentAnswer(False, reason) if reason else DENY_UNAVAILABLE
            return [(denied, 0.0)] * len(pairs)
        return [
            (ConsentAnswer(r.allowed, r.reason), float(r.cache_ttl_seconds)) for r in reply.results
        ]

    async def _remote(self, subject_id: str, purpose: str) -> tuple[ConsentAnswer, float]:
        try:
            reply = await self._stub.CheckConsent(
                consent_pb2.CheckConsentRequest(subject_id=subject_id, purpose=purpose),
                metadata=(("authorization", f"Bearer {self._token.value}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                return ConsentAnswer(False, "invalid_request"), 0.0
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return ConsentAnswer(False, "timeout"), 0.0
            log.warning("consent check failed; denying", code=code.name if code else "?")
            return DENY_UNAVAILABLE, 0.0
        return ConsentAnswer(reply.allowed, reply.reason), float(reply.cache_ttl_seconds)

    def _remember(self, key: tuple[str, str], entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _on_decision(self, msg: Msg) -> None:
        try:
            decision = parse(msg.data).consent_decision_recorded
        except Exception:  # an unreadable message must not kill the subscription
            log.warning("unreadable consent decision; clearing the cache")
            self._cache.clear()
            return
        key = (subject_token(decision.subject_id), decision.purpose)
        if len(self._generation) > self._max_entries:
            # Forget old generations; clearing the cache too keeps every racing answer out.
            self._generation.clear()
            self._cache.clear()
        self._generation[key] = self._generation.get(key, 0) + 1
        self._cache.pop(key, None)
        self.invalidations += 1

    async def _probe_once(self) -> None:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self._timeout
            )
            healthy = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            healthy = False
        if self._healthy and not healthy:
            log.warning("consent service unavailable: denying every check until it is back")
            self._cache.clear()
        self._healthy = healthy

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            await self._probe_once()
