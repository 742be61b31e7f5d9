"""Who is calling: the Bearer key checked against the key file, and the models it may call."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aprendiz.errors import AuthenticationError, FeedbackNotAllowedError, PermissionDeniedError, RateLimitedError
from aprendiz.keys import ApiKey, KeyFile, KeyFileError, KeyFileUnreadable, KeyLockedOut, KeyRing

log = logging.getLogger("aprendiz.gateway")


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a key's tenant name, its limits, or anonymous (no authentication)."""

    name: str
    key_id: str | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    feedback: bool = True  # anonymous callers (no key file) may; a key only when created with --feedback

    @classmethod
    def of(cls, key: ApiKey) -> "Principal":
        return cls(key.name, key.id, key.requests_per_minute, key.tokens_per_minute, key.feedback)

    @property
    def limited(self) -> bool:
        return self.key_id is not None and (self.requests_per_minute is not None or self.tokens_per_minute is not None)


ANONYMOUS = Principal("anonymous")


class Refusal(Exception):
    """Carries the refusal reason (a metric label) with the client-facing error."""

    def __init__(self, reason: str, key: str, error: Exception):
        super().__init__(reason)
        self.reason, self.key, self.error = reason, key, error


class Gatekeeper:
    """Checks ``Authorization: Bearer <key>`` against the key file, re-read when it changes.

    Without a key file every caller is ``anonymous`` (the runner then only listens on
    loopback). A key file that is missing, cannot be read or is not valid refuses every key
    (fails closed: a key revoked in a broken rewrite must not live on in the last good ring);
    the log says so once, and ``on_error`` (a metric) is told of every check that finds it so.
    """

    def __init__(self, keys_file: str | None, *, reload_s: float = 5.0, clock=time.monotonic,
                 on_error: Callable[[str], None] = lambda reason: None):
        self._file = KeyFile(keys_file) if keys_file else None
        self._reload_s = reload_s
        self._clock = clock
        self._on_error = on_error
        self._ring = KeyRing([])
        self._stamp: tuple[int, int] | None = None
        self._broken: tuple[str, str] | None = None  # (reason, message) while the file is broken
        self._checked = float("-inf")
        if self._file is not None:
            self._reload()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def _reload(self) -> None:
        assert self._file is not None, "only a gatekeeper with a key file reloads"
        self._checked = self._clock()
        try:
            try:
                stat = Path(self._file.path).stat()
            except OSError as exc:
                raise KeyFileUnreadable(f"key file {self._file.path} cannot be read: {exc}") from None
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._stamp, self._ring, self._broken = stamp, KeyRing([]), None
                keys = self._file.read()
                self._ring = KeyRing(keys)
                log.info("gateway: %d active keys from %s", sum(k.active for k in keys), self._file.path)
        except KeyFileError as exc:
            unreadable = isinstance(exc, KeyFileUnreadable)
            if self._broken is None or self._broken[1] != str(exc):
                log.error("gateway: %s; every key is refused until it is fixed", exc)
            self._ring, self._broken = KeyRing([]), ("unreadable" if unreadable else "invalid", str(exc))
            if unreadable:
                self._stamp = None  # read it again once it can be, whatever its time stamp
        if self._broken is not None:
            self._on_error(self._broken[0])

    async def authenticate(self, authorization: str | None) -> Principal:
        if self._file is None:
            return ANONYMOUS
        if self._clock() - self._checked >= self._reload_s:
            self._reload()
        if not authorization:
            raise Refusal("missing_key", "unknown", AuthenticationError(
                "No API key: send `Authorization: Bearer <key>` (keys come from `aprendiz keys create`)."
            ))
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Refusal("missing_key", "unknown", AuthenticationError(
                "The Authorization header must read `Bearer <key>`."
            ))
        # scrypt is deliberately slow: the first check of a key runs off the event loop; a key seen
        # before is a lookup, answered here without a thread hop.
        presented = presented.strip()
        hit, key = self._ring.known(presented)
        if not hit:
            try:
                key = await asyncio.to_thread(self._ring.authenticate, presented)
            except KeyLockedOut as locked:
                raise Refusal("failed_attempts", "unknown", RateLimitedError(
                    "Too many failed attempts with this key id; try again later.", retry_after_s=locked.retry_after_s
                )) from None
        if key is None:
            raise Refusal("invalid_key", "unknown", AuthenticationError("The API key is not valid or was revoked."))
        return Principal.of(key)

    def authorize(self, principal: Principal, model: str) -> None:
        if principal.key_id is None:
            return
        key = self._ring.get(principal.key_id)
        if key is None or not key.allows(model):
            raise Refusal("model_not_allowed", principal.name, PermissionDeniedError(
                f"The key of `{principal.name}` may not call the model `{model}`.", param="model"
            ))

    def authorize_feedback(self, principal: Principal, model: str) -> None:
        """Feedback becomes training labels: a permission of its own, beside the model's."""
        self.authorize(principal, model)
        if not principal.feedback:
            raise Refusal("feedback_not_allowed", principal.name, FeedbackNotAllowedError(
                f"The key of `{principal.name}` may call `{model}` but not send it feedback (labelled examples "
                "become training data): create a key with `aprendiz keys create --feedback`."
            ))

    def visible(self, principal: Principal, model: str) -> bool:
        """Whether a model is listed to this caller (/v1/models shows only what a key may call)."""
        if principal.key_id is None:
            return True
        key = self._ring.get(principal.key_id)
        return key is not None and key.allows(model)
