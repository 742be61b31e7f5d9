"""The generator's LoRA loader in-process (fast tier): adapters copied from the platform's store (a
local folder here; the integration tier reads them from S3) to the replica's disk, as Ray Serve LLM
asks for them."""

from __future__ import annotations

import asyncio
import json

import pytest

from aprendiz.errors import ModelNotFoundError
from aprendiz.loras import AdapterStore
from aprendiz.services.generator.lora import StoreLoraLoader
from aprendiz.store import ObjectStore


@pytest.fixture
def store_root(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    root = tmp_path / "store"
    AdapterStore(ObjectStore(str(root))).publish("tiny", "alpaca", adapter)
    return root


def test_an_adapter_is_copied_to_disk_once_and_named_for_vllm(store_root, tmp_path):
    loader = StoreLoraLoader(store={"url": str(store_root)}, lora_root=str(tmp_path / "disk"))

    async def go():
        first = await loader.load_model_from_config("tiny:alpaca", llm_config=None)
        again = await loader.load_model_from_config("tiny:alpaca", llm_config=None)
        return first, again

    first, again = asyncio.run(go())
    assert again is first  # cached: not copied twice
    assert first.model_id == "tiny:alpaca" and isinstance(first.lora_assigned_int_id, int)
    local = tmp_path / "disk" / "tiny" / "alpaca"
    assert first.local_path == str(local)
    assert (local / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "disk" / "tiny" / "alpaca.partial").exists()


@pytest.mark.parametrize("model_id", ["tiny:missing", "other:alpaca"])
def test_an_unknown_adapter_is_a_404(store_root, tmp_path, model_id):
    loader = StoreLoraLoader(store={"url": str(store_root)}, lora_root=str(tmp_path / "disk"))
    with pytest.raises(ModelNotFoundError, match="no adapter"):
        asyncio.run(loader.load_model_from_config(model_id, llm_config=None))
