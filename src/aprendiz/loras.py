"""LoRA adapters in the object store: ``loras/<base model>/<adapter>/`` (peft's files).

Clients call an adapter as the model ``<base model>:<adapter>``. The ingress lists
and checks adapters here; each generator replica copies an adapter to its local
disk the first time it is asked for (Ray Serve's model multiplexing caps how many a
replica holds) and vLLM loads it from there. Local folders and ``s3://`` alike
(fsspec), so the same layout works on a laptop, on moto in the tests and on S3.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from aprendiz.store import ObjectStore

ADAPTER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
ADAPTER_CONFIG = "adapter_config.json"
SEPARATOR = ":"


class AdapterNotFoundError(LookupError):
    pass


def split_model_id(model_id: str) -> tuple[str, str | None]:
    """``base:adapter`` -> (base, adapter); a base model id -> (id, None)."""
    base, sep, adapter = model_id.partition(SEPARATOR)
    return base, (adapter if sep else None)


class AdapterStore:
    """The adapters of every base model in one object store."""

    def __init__(self, store: ObjectStore, *, list_ttl_s: float = 5.0, clock=time.monotonic):
        self.store = store
        self._ttl = list_ttl_s
        self._clock = clock
        self._listed: dict[str, tuple[float, list[str]]] = {}

    @staticmethod
    def _prefix(base: str, adapter: str | None = None) -> str:
        return f"loras/{base}/" + (f"{adapter}/" if adapter else "")

    def publish(self, base: str, adapter: str, folder: Path) -> list[str]:
        """Copy a peft adapter folder (adapter_config.json + weights) into the store; returns the keys."""
        if not ADAPTER_PATTERN.match(adapter):
            raise ValueError(f"adapter name {adapter!r} must match {ADAPTER_PATTERN.pattern}")
        folder = Path(folder)
        if not (folder / ADAPTER_CONFIG).is_file():
            raise ValueError(f"{folder} is not a peft adapter: it has no {ADAPTER_CONFIG}")
        keys = []
        # The config goes last: an adapter is listed only once all its weights are there.
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == ADAPTER_CONFIG)
        for path in files:
            key = self._prefix(base, adapter) + path.relative_to(folder).as_posix()
            self.store.write_bytes(key, path.read_bytes())
            keys.append(key)
        self._listed.pop(base, None)
        return keys

    def adapters(self, base: str) -> list[str]:
        """The adapters of a base model (cached for ``list_ttl_s``)."""
        now = self._clock()
        cached = self._listed.get(base)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        prefix = self._prefix(base)
        names = sorted(
            {key[len(prefix):].split("/", 1)[0] for key in self.store.list(prefix) if key.endswith("/" + ADAPTER_CONFIG)}
        )
        self._listed[base] = (now, names)
        return names

    def exists(self, base: str, adapter: str) -> bool:
        return self.store.exists(self._prefix(base, adapter) + ADAPTER_CONFIG)

    def download(self, base: str, adapter: str, destination: Path) -> Path:
        """Copy an adapter's files to ``destination`` (a folder vLLM can load)."""
        prefix = self._prefix(base, adapter)
        keys = self.store.list(prefix)
        if prefix + ADAPTER_CONFIG not in keys:
            raise AdapterNotFoundError(f"no adapter {adapter!r} for {base!r} in {self.store.url}/{prefix}")
        destination = Path(destination)
        for key in keys:
            target = destination / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.store.read_bytes(key))
        return destination
