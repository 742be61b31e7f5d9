"""The LoRA loader of a generator replica: adapters copied from the object store to local disk.

Ray Serve LLM asks its loader for an adapter the first time a request names it
(``<base>:<adapter>``) and keeps at most ``max_adapters_per_replica`` per replica
(Serve's model multiplexing drops the least recently used). Ray's own loader reads
only cloud URIs; this one reads the platform's store (a local folder or ``s3://``
with its endpoint), so adapters live beside the models and datasets.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aprendiz.config import StoreConfig
from aprendiz.errors import ModelNotFoundError
from aprendiz.loras import AdapterNotFoundError, AdapterStore, split_model_id
from aprendiz.services.raycompat import DiskMultiplexConfig, LoraModelLoader, next_adapter_id
from aprendiz.store import ObjectStore

log = logging.getLogger("aprendiz.generator")


class StoreLoraLoader(LoraModelLoader):
    def __init__(self, *, store: dict[str, Any], download_timeout_s: float | None = None, max_tries: int = 1,
                 lora_root: str | None = None):
        super().__init__(lora_root=lora_root or tempfile.mkdtemp(prefix="aprendiz-lora-"),
                         download_timeout_s=download_timeout_s, max_tries=max_tries)
        config = StoreConfig.model_validate(store)
        self._adapters = AdapterStore(ObjectStore(config.url, storage_options=config.storage_options()))

    async def load_model_from_config(self, lora_model_id: str, llm_config: Any) -> DiskMultiplexConfig:
        if lora_model_id in self.disk_cache:
            return self.disk_cache[lora_model_id]
        base, adapter = split_model_id(lora_model_id)
        if adapter is None:
            raise ModelNotFoundError(f"`{lora_model_id}` names no adapter (`<model>:<adapter>`)", param="model")
        target = Path(str(self.lora_root)) / base / adapter
        try:
            await asyncio.wait_for(asyncio.to_thread(self._copy, base, adapter, target), self.download_timeout_s)
        except AdapterNotFoundError as exc:
            raise ModelNotFoundError(str(exc), param="model") from None
        log.info("generator %s: adapter %s loaded from the store into %s", base, adapter, target)
        config = DiskMultiplexConfig(
            model_id=lora_model_id, max_total_tokens=None, local_path=str(target),
            lora_assigned_int_id=next_adapter_id(),
        )
        self.disk_cache[lora_model_id] = config
        return config

    def _copy(self, base: str, adapter: str, target: Path) -> None:
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self._adapters.download(base, adapter, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
