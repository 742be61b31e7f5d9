"""API keys: created once, shown once, stored hashed in a key file.

A key reads ``apz_<key id>_<secret>``: the key id (8 hex characters) is not secret
and names the record to check; the secret (32 random bytes, base64url) is only
ever stored as a salted scrypt hash (the standard library's ``hashlib.scrypt``,
OpenSSL's implementation). A verified key is remembered in memory by its
SHA-256, so scrypt's deliberate cost is paid once per key and replica, not per
request; so is a wrong secret, and a key id guessed at too often is refused
for a while without scrypt (``KeyRing``).

The key file is YAML, written by ``aprendiz keys create|list|revoke`` and read by
the gateway (mounted from a Secret in Kubernetes)::

    keys:
      - id: 3f9a0c12
        name: team-chat            # the tenant: metrics and logs carry this name
        hash: scrypt$16384$8$1$<salt b64>$<hash b64>
        models: ["aprendiz-tiny-chat", "breast-cancer"]   # glob patterns; ["*"]: every model
        requests_per_minute: 600    # null: unlimited
        tokens_per_minute: 200000   # null: unlimited
        feedback: false             # may post feedback (training labels): only when created with --feedback
        created: "2026-11-26T16:00:00+00:00"
        revoked: null               # the time it was revoked
"""

from __future__ import annotations

import base64
import fcntl
import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from aprendiz.store import write_local_atomic

KEY_PATTERN = re.compile(r"^apz_([0-9a-f]{8})_([A-Za-z0-9_\-]{43})$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# A wrong secret with a real key id costs one scrypt (tens of ms, 16 MiB): each is remembered (the
# most recent FAILED_REMEMBERED), and a key id with MAX_FAILURES failures within FAILURE_WINDOW_S
# has its next new secrets refused without scrypt until the oldest failure leaves the window.
FAILED_REMEMBERED = 4096
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0


class KeyFileError(ValueError):
    """The key file is not valid or names no such key."""


class KeyLockedOut(Exception):
    """Too many wrong secrets for one key id lately: refused without checking, ``retry_after_s``."""

    def __init__(self, key_id: str, retry_after_s: float):
        super().__init__(f"too many failed attempts for key id {key_id}")
        self.key_id, self.retry_after_s = key_id, retry_after_s


class KeyFileUnreadable(KeyFileError):
    """The key file exists but cannot be read (permissions, a folder in its place, an I/O error)."""


class ApiKey(BaseModel):
    """One key's record (never the key itself)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{8}$")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="The tenant; a metric label.")
    hash: str
    models: list[str] = Field(default_factory=lambda: ["*"])
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    feedback: bool = Field(False, description="May post labelled examples (feedback), which become training data.")
    created: str
    revoked: str | None = None

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def active(self) -> bool:
        return self.revoked is None


class _KeyDocument(BaseModel):
    """The key file's whole document: ``keys: null``, a list at the top, a record that is not a
    mapping are all refused."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class KeyFile:
    """The key file on disk: read, add, revoke; written atomically."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def read(self) -> list[ApiKey]:
        """The file's keys ([] when there is no file): KeyFileUnreadable when it cannot be read,
        KeyFileError when it is not a mapping with a list of valid key records under ``keys``."""
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileUnreadable(f"key file {self.path} cannot be read: {exc}") from None
        try:
            return _KeyDocument.model_validate(yaml.safe_load(text) or {}).keys
        except (yaml.YAMLError, ValueError) as exc:
            raise KeyFileError(f"key file {self.path} is not valid: {exc}") from None

    def _write(self, keys: list[ApiKey]) -> None:
        text = yaml.safe_dump({"keys": [k.model_dump() for k in keys]}, sort_keys=False)
        write_local_atomic(str(self.path), text.encode("utf-8"), mode=0o600)  # fsynced, then renamed

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Held while the file is read, changed and written: concurrent creates and revokes (other
        processes included) take turns on ``<file>.lock`` instead of losing each other's keys."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        feedback: bool = False,
    ) -> tuple[str, ApiKey]:
        """Add a key; returns the key (shown once, never stored) and its record."""
        secret = secrets.token_urlsafe(32)
        hashed = hash_secret(secret)  # scrypt before the lock: others wait for the write only
        with self._changing():
            keys = self.read()
            taken = {k.id for k in keys}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            record = ApiKey(
                id=key_id,
                name=name,
                hash=hashed,
                models=models or ["*"],
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                feedback=feedback,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            self._write(keys + [record])
        return f"apz_{key_id}_{secret}", record

    def revoke(self, name_or_id: str) -> list[ApiKey]:
        """Revoke every active key with this id or tenant name; returns them."""
        with self._changing():
            keys = self.read()
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            hit = [k for k in keys if k.active and name_or_id in (k.id, k.name)]
            if not hit:
                raise KeyFileError(f"no active key has the id or name {name_or_id!r} in {self.path}")
            for k in hit:
                k.revoked = now
            self._write(keys)
        return hit


class KeyRing:
    """The keys a gateway replica checks requests against (rebuilt when the file changes).

    Both outcomes of scrypt are remembered by the presented key's SHA-256: a verified key is a
    lookup from then on, and so is a wrong secret seen before (a refusal). Failures per key id are
    limited (``MAX_FAILURES`` in ``FAILURE_WINDOW_S``) so that guessing at a real key id cannot
    take the replica's cores; a key verified before the guessing keeps working.
    """

    def __init__(self, keys: list[ApiKey], *, clock: Callable[[], float] = time.monotonic):
        self._by_id = {k.id: k for k in keys}
        self._clock = clock
        # sha256(key) -> (key id, stored hash): keys already checked with scrypt.
        self._verified: dict[bytes, tuple[str, str]] = {}
        self._failed: OrderedDict[bytes, None] = OrderedDict()  # sha256 of wrong secrets, newest last
        self._failures: dict[str, deque[float]] = {}  # key id -> times of its recent failed checks

    def get(self, key_id: str) -> ApiKey | None:
        return self._by_id.get(key_id)

    def known(self, presented: str) -> tuple[bool, ApiKey | None]:
        """(True, the active key record or None) for a key checked before: a SHA-256 and a lookup,
        cheap enough for the event loop. (False, None) when only ``authenticate``'s scrypt can tell."""
        return self._known(hashlib.sha256(presented.encode()).digest())

    def _known(self, fingerprint: bytes) -> tuple[bool, ApiKey | None]:
        seen = self._verified.get(fingerprint)
        if seen is not None:
            record = self._by_id.get(seen[0])
            if record is not None and record.hash == seen[1]:
                return True, record if record.active else None
        if fingerprint in self._failed:
            return True, None
        return False, None

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key record for a presented key, or None; KeyLockedOut when its key id has
        failed too often lately."""
        fingerprint = hashlib.sha256(presented.encode()).digest()
        hit, record = self._known(fingerprint)
        if hit:
            return record
        match = KEY_PATTERN.match(presented)
        record = self._by_id.get(match.group(1)) if match else None
        if match is None or record is None:
            return None  # no such key id: nothing to run scrypt against
        self._check_failures(record.id)
        if not verify_secret(match.group(2), record.hash):
            self._failed_once(record.id, fingerprint)
            return None
        self._verified[fingerprint] = (record.id, record.hash)
        return record if record.active else None

    def _check_failures(self, key_id: str) -> None:
        recent = self._failures.get(key_id)
        if not recent:
            return
        now = self._clock()
        while recent and now - recent[0] >= FAILURE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_FAILURES:
            raise KeyLockedOut(key_id, FAILURE_WINDOW_S - (now - recent[0]))

    def _failed_once(self, key_id: str, fingerprint: bytes) -> None:
        self._failures.setdefault(key_id, deque()).append(self._clock())
        self._failed[fingerprint] = None
        while len(self._failed) > FAILED_REMEMBERED:
            self._failed.popitem(last=False)
