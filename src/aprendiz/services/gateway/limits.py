"""Per-key limits: requests and tokens per minute, as token buckets shared by every ingress replica.

The buckets live in one small Serve deployment (``RateLimiter``, no CPU reserved);
each ingress replica asks it before a request and tells it the tokens a request
used after. A limit is a bucket of ``per_minute`` units refilled at
``per_minute / 60`` a second, so a key may burst up to its minute's allowance.
Tokens are charged when a request finishes (its size is unknown before), so a
key is refused once its token bucket is empty and until it refills.

If the limiter cannot be reached the gateway lets requests through and logs it:
availability over precision, as the limits protect capacity, not secrets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from aprendiz.errors import RateLimitedError
from aprendiz.services.gateway.auth import Principal, Refusal

log = logging.getLogger("aprendiz.gateway")


@dataclass
class TokenBucket:
    per_minute: float
    level: float
    updated: float

    @classmethod
    def full(cls, per_minute: float, now: float) -> "TokenBucket":
        return cls(per_minute, per_minute, now)

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    def refill(self, now: float, per_minute: float) -> None:
        self.per_minute = per_minute  # the key's limit may have changed: keep the level, clamped below
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0: available now)."""
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate


class Buckets:
    """The buckets of every key (plain Python: the unit tests drive it with their own clock)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    def _bucket(self, table: dict[str, TokenBucket], key_id: str, per_minute: int) -> TokenBucket:
        now = self._clock()
        bucket = table.get(key_id)
        if bucket is None:
            bucket = table[key_id] = TokenBucket.full(per_minute, now)
        else:
            bucket.refill(now, per_minute)
        return bucket

    def admit(self, key_id: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> tuple[str | None, float]:
        """Take one request; returns (None, 0) or (the limit refused, seconds to wait)."""
        if tokens_per_minute is not None:
            tokens = self._bucket(self._tokens, key_id, tokens_per_minute)
            if tokens.level <= 0:
                return "tokens_per_minute", tokens.wait_for(1.0)
        if requests_per_minute is not None:
            requests = self._bucket(self._requests, key_id, requests_per_minute)
            wait = requests.wait_for(1.0)
            if wait > 0:
                return "requests_per_minute", wait
            requests.level -= 1.0
        return None, 0.0

    def charge(self, key_id: str, tokens: int, tokens_per_minute: int | None) -> None:
        """Take the tokens a finished request used (the level may go below zero)."""
        if tokens_per_minute is not None and tokens > 0:
            self._bucket(self._tokens, key_id, tokens_per_minute).level -= tokens


class RateLimiter:
    """The Serve deployment holding every key's buckets (one replica: the shared state)."""

    def __init__(self):
        self._buckets = Buckets()

    def admit(self, key_id: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> tuple[str | None, float]:
        return self._buckets.admit(key_id, requests_per_minute, tokens_per_minute)

    def charge(self, key_id: str, tokens: int, tokens_per_minute: int | None) -> None:
        self._buckets.charge(key_id, tokens, tokens_per_minute)


class Limiter:
    """The ingress's side: asks the RateLimiter deployment (``handle``; None: no limits) for each
    limited key's request, and charges it the tokens the request used."""

    def __init__(self, handle: DeploymentHandle | None):
        self._handle = handle

    async def admit(self, principal: Principal) -> None:
        """Raises a Refusal (429 with Retry-After) when the key is over a limit."""
        if not principal.limited or self._handle is None:
            return
        try:
            reason, wait_s = await self._handle.admit.remote(
                principal.key_id, principal.requests_per_minute, principal.tokens_per_minute
            )
        except Exception as exc:  # the limiter is down: serve, and say so
            log.warning("gateway: rate limiter unreachable (%s); request let through", type(exc).__name__)
            return
        if reason is None:
            return
        requests = reason == "requests_per_minute"
        per_minute = principal.requests_per_minute if requests else principal.tokens_per_minute
        raise Refusal(reason, principal.name, RateLimitedError(
            f"The key of `{principal.name}` is over its limit of {per_minute} "
            f"{'requests' if requests else 'tokens'} per minute; retry in {wait_s:.1f} s.",
            retry_after_s=wait_s,
        ))

    async def charge(self, principal: Principal, tokens: int) -> None:
        if not (principal.limited and principal.tokens_per_minute is not None and self._handle is not None and tokens):
            return
        try:
            await self._handle.charge.remote(principal.key_id, tokens, principal.tokens_per_minute)
        except Exception as exc:
            log.warning("gateway: rate limiter unreachable (%s); %d tokens not charged", type(exc).__name__, tokens)


def build_rate_limiter() -> Application:
    return serve.deployment(  # type: ignore[attr-defined]  # Serve's overloads hide .bind
        RateLimiter, name="RateLimiter", num_replicas=1, max_ongoing_requests=4096,
        ray_actor_options={"num_cpus": 0},
    ).bind()
