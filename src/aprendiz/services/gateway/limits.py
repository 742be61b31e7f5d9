"""Per-key limits: requests and tokens per minute, as token buckets shared by every ingress replica.

The buckets live in one small Serve deployment (``RateLimiter``, no CPU reserved);
each ingress replica asks it before a request and tells it the tokens a request
used after. A limit is a bucket of ``per_minute`` units refilled at
``per_minute / 60`` a second, so a key may burst up to its minute's allowance.
Tokens are charged when a request finishes (its size is unknown before), so a
key is refused once its token bucket is empty and until it refills.

If the limiter cannot be reached, fails or does not answer within ``gateway.limiter_timeout_s``
(its replica restarting, say), the gateway lets the request through: availability over
precision, as the limits protect capacity, not secrets. Each such request is counted
(``aprendiz_gateway_limiter_fail_open_total``, alert ``AprendizRateLimiterFailingOpen``) and the
log says so at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
        # Serve calls the deployment's sync methods from a thread pool: a check and its take are one step.
        self._lock = threading.Lock()

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
        with self._lock:
            return self._admit(key_id, requests_per_minute, tokens_per_minute)

    def _admit(self, key_id: str, requests_per_minute: int | None, tokens_per_minute: int | None) -> tuple[str | None, float]:
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
            with self._lock:
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
    limited key's request, and charges it the tokens the request used; fails open (see above)."""

    LOG_EVERY_S = 60.0

    def __init__(self, handle: DeploymentHandle | None, *, timeout_s: float = 1.0,
                 on_fail_open: Callable[[str, str], None] = lambda call, reason: None):
        self._handle = handle
        self._timeout_s = timeout_s
        self._on_fail_open = on_fail_open
        self._logged_at = float("-inf")
        self._unlogged = 0

    async def admit(self, principal: Principal) -> None:
        """Raises a Refusal (429 with Retry-After) when the key is over a limit."""
        if not principal.limited or self._handle is None:
            return
        answer = await self._call("admit", principal.key_id, principal.requests_per_minute, principal.tokens_per_minute)
        if answer is None:
            return
        reason, wait_s = answer
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
        await self._call("charge", principal.key_id, tokens, principal.tokens_per_minute)

    async def _call(self, method: str, *args: Any) -> Any:
        """The limiter's answer, or None once it failed open (counted, logged at most once a minute)."""
        response = None
        try:
            response = getattr(self._handle, method).remote(*args)
            return await asyncio.wait_for(response, self._timeout_s)
        except asyncio.TimeoutError:
            cancel = getattr(response, "cancel", None)
            if cancel is not None:
                cancel()
            self._failed_open(method, "timeout", f"no answer within {self._timeout_s:g} s")
        except Exception as exc:  # the limiter's replica is gone or restarting: serve, and say so
            self._failed_open(method, "unreachable", type(exc).__name__)
        return None

    def _failed_open(self, method: str, reason: str, detail: str) -> None:
        self._on_fail_open(method, reason)
        now = time.monotonic()
        if now - self._logged_at < self.LOG_EVERY_S:
            self._unlogged += 1
            return
        log.warning("gateway: rate limiter failed (%s: %s); requests are let through (%d more since the last "
                    "line; aprendiz_gateway_limiter_fail_open_total counts them)", reason, detail, self._unlogged)
        self._logged_at, self._unlogged = now, 0


def build_rate_limiter() -> Application:
    return serve.deployment(  # type: ignore[attr-defined]  # Serve's overloads hide .bind
        RateLimiter, name="RateLimiter", num_replicas=1, max_ongoing_requests=4096,
        ray_actor_options={"num_cpus": 0},
    ).bind()
