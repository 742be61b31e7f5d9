"""A small object store over fsspec: a local folder or an S3 bucket (MinIO included), by URL.

Everything the platform keeps (models, their cards, training data, feedback) lives under
one root URL and is addressed by '/'-separated keys relative to it::

    store = ObjectStore("s3://aprendiz/registry")   # or ObjectStore("var/registry")
    store.write_json("models/breast-cancer/champion.json", {...})

Writes are atomic: a reader sees the old object or the new one, never a part. On a local
folder a write goes to a temporary file beside the target, is fsynced and renamed over
it; on S3 one PUT is atomic by itself. Listings are never served from a cache, so an
object another process has just written shows up at once.

Credentials are never read here: with no ``storage_options`` s3fs (botocore) takes the
standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` for MinIO ...) itself.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

# Prefix of the temporary files of local atomic writes; listings skip them.
_TMP_PREFIX = ".aprendiz-tmp-"


class KeyNotFoundError(FileNotFoundError):
    """No object is stored under this key."""

    def __init__(self, key: str):
        super().__init__(f"no object under key {key!r}")
        self.key = key


class KeyExistsError(FileExistsError):
    """A create-only write found an object already stored under this key."""

    def __init__(self, key: str):
        super().__init__(f"an object is already stored under key {key!r}")
        self.key = key


def _split_key(key: str, *, what: str = "key") -> list[str]:
    """The segments of a relative '/'-separated key, or ValueError for anything that could escape the root."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what} must be a non-empty string, not {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key or "://" in key:
        raise ValueError(f"{what} {key!r} must be relative and '/'-separated")
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"{what} {key!r} has an empty, '.' or '..' segment")
    return segments


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key ("models/x/1/card.json"), else raise ValueError."""
    _split_key(key)
    return key


def _redact(url: str) -> str:
    """The URL without any user:password part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


class ObjectStore:
    """Bytes and JSON under '/'-separated keys, rooted at a local folder or an ``s3://bucket/prefix`` URL."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None):
        if not isinstance(url, str) or not url.strip():
            raise ValueError("the store URL must be a non-empty string")
        options = dict(storage_options or {})
        if "://" in url and not url.startswith("file://"):
            # Listings must see what other processes wrote a moment ago.
            options.setdefault("use_listings_cache", False)
        fs, root = url_to_fs(url, **options)
        self._fs: fsspec.AbstractFileSystem = fs
        self._local = isinstance(fs, LocalFileSystem)
        self._root = root.rstrip("/")
        if not self._root:
            raise ValueError(f"store URL {_redact(url)!r} names no bucket or folder")
        if self._local:
            os.makedirs(self._root, exist_ok=True)
        self._url = url.rstrip("/") if "://" in url else self._root

    @property
    def url(self) -> str:
        """Where the store is rooted: the absolute folder, or the URL as given (without a trailing '/')."""
        return self._url

    def __repr__(self) -> str:
        return f"ObjectStore({_redact(self._url)!r})"

    def arrow(self, key: str = "") -> tuple[Any, str]:
        """(pyarrow filesystem, path): the store as the filesystem Ray Data reads Parquet shards
        from and Ray Train writes checkpoints to, and the path of ``key`` (a folder or an object;
        "": the store's root) in it. A local folder is pyarrow's own local filesystem; anything
        else is this store's fsspec filesystem behind pyarrow's adapter, so both see the same objects."""
        import pyarrow.fs as pafs

        path = self._path(key) if key else self._root
        if self._local:
            return pafs.LocalFileSystem(), path
        return pafs.PyFileSystem(pafs.FSSpecHandler(self._fs)), path

    def _path(self, key: str) -> str:
        return self._root + "/" + "/".join(_split_key(key))

    def _relative(self, path: str) -> str:
        return path[len(self._root) + 1 :]

    def _invalidate(self, path: str) -> None:
        self._fs.invalidate_cache(path)

    # -- bytes -------------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; ``KeyNotFoundError`` when there is none."""
        path = self._path(key)
        try:
            return self._fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFoundError(key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any object there."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        path = self._path(key)
        if self._local:
            write_local_atomic(path, bytes(data))
        else:
            self._fs.pipe_file(path, bytes(data))
        self._invalidate(path)

    def create_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` only if no object is there, else ``KeyExistsError``.

        Of several writers racing for one key, exactly one succeeds: on a local folder the complete
        temporary file is hard-linked to the key (link fails on an existing name); on S3 the PUT
        carries ``If-None-Match: *`` (AWS S3, MinIO and moto honour it; s3fs maps the 412 to
        FileExistsError)."""
        path = self._path(key)
        try:
            if self._local:
                write_local_atomic(path, bytes(data), exclusive=True)
            else:
                self._fs.pipe_file(path, bytes(data), mode="create")
        except FileExistsError:
            raise KeyExistsError(key) from None
        finally:
            self._invalidate(path)

    def exists(self, key: str) -> bool:
        """Whether an object (not a folder) is stored under ``key``."""
        return self._fs.isfile(self._path(key))

    def delete(self, key: str) -> None:
        """Remove the object under ``key``; ``KeyNotFoundError`` when there is none."""
        path = self._path(key)
        if not self._fs.isfile(path):
            raise KeyNotFoundError(key)
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            raise KeyNotFoundError(key) from None
        finally:
            self._invalidate(path)

    def list(self, prefix: str = "") -> list[str]:
        """Every object key under the folder ``prefix`` (recursive, sorted, relative to the root).

        ``""`` lists the whole store; a prefix that does not exist gives an empty list.
        """
        folder = prefix[:-1] if prefix.endswith("/") else prefix
        base = self._path(folder) if folder else self._root
        self._invalidate(base)
        try:
            paths = self._fs.find(base, withdirs=False)
        except FileNotFoundError:
            return []
        keys = []
        for path in paths:
            path = path.rstrip("/")
            if not path.startswith(self._root + "/"):
                continue
            if path.rsplit("/", 1)[-1].startswith(_TMP_PREFIX):
                continue
            keys.append(self._relative(path))
        return sorted(keys)

    # -- JSON --------------------------------------------------------------------------------

    def read_json(self, key: str) -> Any:
        """The object parsed as UTF-8 JSON."""
        return json.loads(self.read_bytes(key).decode("utf-8"))

    def write_json(self, key: str, obj: Any) -> None:
        """Store ``obj`` as UTF-8 JSON (sorted keys, indent 2), atomically."""
        self.write_bytes(key, _json_bytes(obj))

    def create_json(self, key: str, obj: Any) -> None:
        """:meth:`create_bytes` for ``obj`` as JSON: ``KeyExistsError`` when the key is taken."""
        self.create_bytes(key, _json_bytes(obj))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_local_atomic(path: str, data: bytes, *, mode: int = 0o666, exclusive: bool = False) -> None:
    """Write to a temporary file in the target's folder, fsync it, rename it over the target.

    With ``exclusive`` the file is hard-linked to the target instead, which raises FileExistsError
    when the target exists (so it is never replaced). ``mode`` is filtered by the umask (0o666: the
    mode a plain open() would give)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{_TMP_PREFIX}{os.path.basename(path)}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (best effort: not every filesystem lets a folder be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def jsonable(value: Any, *, nonfinite: str = "null") -> Any:
    """``value`` with numpy scalars made plain and keys made strings, for JSON. A non-finite float
    becomes ``None`` (``nonfinite="null"``, valid JSON) or its text (``"text"``: "inf", "nan"),
    which keeps what a user wrote visible in a quarantine file."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v, nonfinite=nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, nonfinite=nonfinite) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number):
            return number
        return None if nonfinite == "null" else str(number)
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)
