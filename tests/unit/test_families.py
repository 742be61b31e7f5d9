"""aprendiz.families, LoRA settings and the adapter store: what each family needs, refused early when impossible."""

from __future__ import annotations

import json

import pytest

from aprendiz import families
from aprendiz.config import ConfigError, GeneratorModel, PlatformConfig
from aprendiz.loras import AdapterNotFoundError, AdapterStore, split_model_id
from aprendiz.store import ObjectStore


def _checkpoint(path, architecture, template=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template} if template else {}))
    return path


def test_the_family_is_read_from_the_checkpoint(tmp_path):
    flor = _checkpoint(tmp_path / "flor", "BloomForCausalLM")
    model = GeneratorModel(id="flor", source=str(flor)).check_family()
    assert model.family == "flor"
    with pytest.raises(ConfigError, match="family 'gpt-neox' is GPTNeoXForCausalLM, but .* holds BloomForCausalLM"):
        GeneratorModel(id="x", source=str(flor), family="gpt-neox").check_family()
    odd = _checkpoint(tmp_path / "odd", "MambaForCausalLM")
    with pytest.raises(ConfigError, match="MambaForCausalLM, which is not a family"):
        GeneratorModel(id="odd", source=str(odd)).check_family()
    with pytest.raises(ConfigError, match="unknown family 'gpt5'"):
        GeneratorModel(id="x", source="org/some-model", family="gpt5").check_family()


def test_a_family_the_cpu_backend_cannot_run_is_refused_with_the_gpu_path(tmp_path, monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "mamba", families.Family(
        "mamba", "MambaForCausalLM", "state-space models", cpu=False, cpu_reason="no CPU kernels for its scan"))
    source = str(_checkpoint(tmp_path / "m", "MambaForCausalLM"))
    with pytest.raises(ConfigError) as refused:
        PlatformConfig.model_validate({"generators": [{"id": "m", "source": source}]}).resolved(None)
    message = str(refused.value)
    assert "mamba family" in message and "no CPU kernels" in message and "accelerator: gpu" in message
    gpu = {"id": "m", "source": source, "accelerator": "gpu", "accelerator_type": "L4"}
    assert PlatformConfig.model_validate({"generators": [gpu]}).resolved(None).generators[0].family == "mamba"


def test_a_checkpoint_without_a_chat_template_gets_the_default(tmp_path):
    bare = _checkpoint(tmp_path / "bare", "GPTNeoXForCausalLM")
    own = _checkpoint(tmp_path / "own", "LlamaForCausalLM", template="{{ messages }}")
    assert GeneratorModel(id="a", source=str(bare)).llm_config()["engine_kwargs"]["chat_template"] == (
        families.DEFAULT_CHAT_TEMPLATE
    )
    assert "chat_template" not in GeneratorModel(id="b", source=str(own)).llm_config()["engine_kwargs"]
    chosen = GeneratorModel(id="c", source=str(bare), chat_template="{{ 'x' }}").llm_config()
    assert chosen["engine_kwargs"]["chat_template"] == "{{ 'x' }}"
    assert "chat_template" not in GeneratorModel(id="d", source="org/hub-model").llm_config()["engine_kwargs"]


def test_the_default_template_keeps_spanish_text_intact():
    from jinja2 import Template

    text = Template(families.DEFAULT_CHAT_TEMPLATE).render(
        messages=[{"role": "system", "content": "Sé breve: ñandú, acción."}, {"role": "user", "content": "¿Hola?"}],
        add_generation_prompt=True,
    )
    assert text == "### System:\nSé breve: ñandú, acción.\n\n### User:\n¿Hola?\n\n### Assistant:\n"


def test_lora_settings_become_ray_and_vllm_settings(tmp_path):
    source = str(_checkpoint(tmp_path / "llama", "LlamaForCausalLM", template="t"))
    config = GeneratorModel(id="llama", source=source, lora={"max_adapters_per_replica": 2, "max_rank": 8}).llm_config()
    assert config["lora_config"] == {"max_num_adapters_per_replica": 2}
    assert {k: config["engine_kwargs"][k] for k in ("enable_lora", "max_loras", "max_cpu_loras", "max_lora_rank")} == {
        "enable_lora": True, "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 8}
    neox = str(_checkpoint(tmp_path / "neox", "GPTNeoXForCausalLM"))
    with pytest.raises(ConfigError, match="no LoRA support"):
        GeneratorModel(id="n", source=neox, lora={}).check_family()
    with pytest.raises(ValueError, match="max_rank"):
        GeneratorModel(id="l", source=source, lora={"max_rank": 12})


def test_adapters_in_the_store(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    store = AdapterStore(ObjectStore(str(tmp_path / "store")), list_ttl_s=0)
    assert store.adapters("base") == []
    store.publish("base", "alpaca", adapter)
    assert store.adapters("base") == ["alpaca"] and store.exists("base", "alpaca")
    copied = store.download("base", "alpaca", tmp_path / "copy")
    assert (copied / "adapter_model.safetensors").read_bytes() == b"weights"
    with pytest.raises(AdapterNotFoundError):
        store.download("base", "other", tmp_path / "x")
    with pytest.raises(ValueError, match="no adapter_config.json"):
        store.publish("base", "bad", tmp_path / "copy" / "missing")
    with pytest.raises(ValueError, match="must match"):
        store.publish("base", "a/b", adapter)
    assert split_model_id("base:alpaca") == ("base", "alpaca") and split_model_id("base") == ("base", None)


def test_tiny_family_checkpoints_have_their_architecture_and_no_template(tmp_path):
    from aprendiz.training.tinyllm.families import build_tiny_family

    for family, architecture in (("flor", "BloomForCausalLM"), ("gpt-neox", "GPTNeoXForCausalLM")):
        report = build_tiny_family(family, tmp_path / family)
        assert report["architecture"] == architecture and report["head_dim"] >= 32
        assert families.checkpoint_architecture(tmp_path / family) == architecture
        assert families.checkpoint_has_chat_template(tmp_path / family) is False
