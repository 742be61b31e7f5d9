"""aprendiz.config: the platform config schema and what it becomes for ray.serve.llm."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aprendiz.config import ConfigError, GeneratorModel, PlatformConfig


def model(**overrides) -> dict:
    return {"id": "m", "source": "/models/m", **overrides}


def test_the_shipped_config_is_valid_and_points_at_the_default_model(repo_root):
    config = PlatformConfig.from_yaml(repo_root / "config" / "aprendiz.yaml")
    assert [g.id for g in config.generators] == ["aprendiz-tiny-chat"]
    assert config.generators[0].source == str(repo_root / "var" / "models" / "aprendiz-tiny-chat")


def test_unknown_keys_are_rejected():
    with pytest.raises(ValidationError, match="replicas"):
        PlatformConfig.model_validate({"generators": [model(replicas=3)]})


def test_duplicate_ids_and_empty_lists_are_rejected():
    with pytest.raises(ValidationError, match="appears twice"):
        PlatformConfig.model_validate({"generators": [model(), model()]})
    with pytest.raises(ValidationError):
        PlatformConfig.model_validate({"generators": []})  # and no classifiers either


def test_autoscaling_bounds():
    with pytest.raises(ValidationError, match="min_replicas"):
        GeneratorModel.model_validate(model(autoscaling={"min_replicas": 3, "max_replicas": 2}))


def test_model_id_must_be_a_plain_name():
    with pytest.raises(ValidationError):
        GeneratorModel.model_validate(model(id="bad id/with spaces"))


def test_cpu_model_gets_a_cpu_placement_bundle_and_no_accelerator():
    config = GeneratorModel.model_validate(model(num_cpus=2, env={"VLLM_CPU_KVCACHE_SPACE": "1"})).llm_config()
    assert config["placement_group_config"] == {"bundles": [{"CPU": 2}]}
    assert "accelerator_type" not in config
    assert config["runtime_env"] == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0"}}


def test_a_cpu_engine_compiles_through_the_cache_it_can_load():
    """vLLM 0.29's AOT-compiled artifact fails to load on CPU ("'function' object has no attribute
    'finalize_loading'"), so every start compiled the model again (16 s here); the inductor cache
    path loads. The engine's environment turns AOT off on CPU unless the model's env says otherwise."""
    cpu = GeneratorModel.model_validate(model()).llm_config()
    assert cpu["runtime_env"] == {"env_vars": {"VLLM_USE_AOT_COMPILE": "0"}}
    chosen = GeneratorModel.model_validate(model(env={"VLLM_USE_AOT_COMPILE": "1"})).llm_config()
    assert chosen["runtime_env"]["env_vars"]["VLLM_USE_AOT_COMPILE"] == "1"
    gpu = GeneratorModel.model_validate(model(source="s3://b/m", accelerator="gpu")).llm_config()
    assert "VLLM_USE_AOT_COMPILE" not in ((gpu["runtime_env"] or {}).get("env_vars") or {})


def test_gpu_model_is_the_same_entry_with_an_accelerator():
    config = GeneratorModel.model_validate(
        model(source="s3://bucket/llama", accelerator="gpu", accelerator_type="L4", num_gpus=2)
    ).llm_config()
    assert config["accelerator_type"] == "L4"
    assert config["engine_kwargs"]["tensor_parallel_size"] == 2
    assert config["model_loading_config"]["model_source"] == {"bucket_uri": "s3://bucket/llama"}
    assert "placement_group_config" not in config


def test_a_gpu_engine_streams_its_weights_from_an_object_store():
    """On GPU an s3:// or gs:// source is read by vLLM's Run:ai model streamer straight into GPU memory
    (Ray Serve LLM then downloads no weights to the node's disk); a local folder, a CPU engine, or a
    load_format the model's engine_kwargs names are left as they are."""
    for source in ("s3://bucket/llama", "gs://bucket/llama"):
        config = GeneratorModel.model_validate(model(source=source, accelerator="gpu")).llm_config()
        assert config["engine_kwargs"]["load_format"] == "runai_streamer"
        assert config["model_loading_config"]["model_source"] == {"bucket_uri": source}
    for unchanged in (model(source="/models/m", accelerator="gpu"), model(source="s3://bucket/llama"),
                      model(source="org/name", accelerator="gpu")):
        assert "load_format" not in GeneratorModel.model_validate(unchanged).llm_config()["engine_kwargs"]
    chosen = model(source="s3://bucket/llama", accelerator="gpu", engine_kwargs={"load_format": "safetensors"})
    assert GeneratorModel.model_validate(chosen).llm_config()["engine_kwargs"]["load_format"] == "safetensors"


def test_accelerator_type_needs_gpu():
    with pytest.raises(ValidationError, match="accelerator_type"):
        GeneratorModel.model_validate(model(accelerator_type="L4"))


def test_relative_sources_resolve_against_the_config_folder_and_hub_ids_stay(tmp_path: Path):
    (tmp_path / "models" / "local").mkdir(parents=True)
    path = tmp_path / "conf" / "platform.yaml"
    path.parent.mkdir()
    path.write_text(
        "generators:\n"
        "  - {id: a, source: ../models/local}\n"
        "  - {id: b, source: org/some-model}\n"
        "  - {id: c, source: s3://bucket/key}\n"
    )
    a, b, c = PlatformConfig.from_yaml(path).generators
    assert a.source == str(tmp_path / "models" / "local")
    assert b.source == "org/some-model"
    assert c.source == "s3://bucket/key"


def test_unreadable_files_raise_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        PlatformConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("generators: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PlatformConfig.from_yaml(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        PlatformConfig.from_yaml(bad)


def test_ray_accepts_the_generated_llm_config():
    from aprendiz.services.generator.deployment import llm_config

    config = llm_config(GeneratorModel.model_validate(model(engine_kwargs={"max_model_len": 256})))
    assert config.model_id == "m"
    assert config.engine_kwargs["max_model_len"] == 256
    assert config.placement_group_config == {"bundles": [{"CPU": 1.0}]}


def _rented(**extra):
    return {"id": "gpt", "base_url": "https://api.example/v1", "upstream_model": "g", **extra}


def test_rented_models_share_the_generators_namespace_and_fallbacks_must_exist():
    from aprendiz.config import PlatformConfig

    generator = {"id": "tiny", "source": "/m"}
    ok = PlatformConfig.model_validate(
        {"generators": [generator | {"fallback": "gpt"}], "rented": [_rented(fallback="tiny")]}
    )
    assert ok.rented[0].cost_usd(1_000_000, 0) == 0.0
    with pytest.raises(ValueError, match="appears twice"):
        PlatformConfig.model_validate({"generators": [generator], "rented": [_rented(id="tiny")]})
    with pytest.raises(ValueError, match="not a rented model id"):
        PlatformConfig.model_validate({"generators": [generator | {"fallback": "nope"}]})
    with pytest.raises(ValueError, match="not a generator id"):
        PlatformConfig.model_validate({"generators": [generator], "rented": [_rented(fallback="nope")]})
    with pytest.raises(ValueError, match="base_url"):
        PlatformConfig.model_validate({"rented": [_rented(base_url="ftp://x")]})
    with pytest.raises(ValueError, match="api_key"):
        PlatformConfig.model_validate({"rented": [_rented(api_key="sk-literal")]})  # never in the file


def test_replica_prices_by_accelerator():
    from aprendiz.config import GatewayConfig, GeneratorModel

    gateway = GatewayConfig(hourly_prices_usd={"cpu": 0.05, "L4": 0.9})
    assert gateway.generator_hourly_usd(GeneratorModel(id="a", source="/m", num_cpus=2)) == pytest.approx(0.1)
    l4 = GeneratorModel(id="b", source="/m", accelerator="gpu", accelerator_type="L4", num_gpus=2)
    assert gateway.generator_hourly_usd(l4) == pytest.approx(1.8)
    h100 = GeneratorModel(id="c", source="/m", accelerator="gpu", accelerator_type="H100")
    assert gateway.generator_hourly_usd(h100) == pytest.approx(6.98)  # the default list
    assert gateway.generator_hourly_usd(h100.model_copy(update={"hourly_usd": 2.5})) == 2.5


def test_a_classifier_on_a_gpu_mirrors_a_generators_fields():
    from aprendiz.config import ClassifierModel

    cpu = ClassifierModel(name="c")
    assert (cpu.accelerator, cpu.accelerator_type, cpu.num_gpus) == ("cpu", None, 1)
    shared = ClassifierModel.model_validate({"name": "c", "accelerator": "gpu", "accelerator_type": "L4", "num_gpus": 0.5})
    assert (shared.accelerator, shared.accelerator_type, shared.num_gpus) == ("gpu", "L4", 0.5)
    with pytest.raises(ValidationError, match="classifier 'c': accelerator_type is only meaningful with accelerator: gpu"):
        ClassifierModel.model_validate({"name": "c", "accelerator_type": "L4"})
    with pytest.raises(ValidationError, match="num_gpus"):
        ClassifierModel.model_validate({"name": "c", "accelerator": "gpu", "num_gpus": 0})
    with pytest.raises(ValidationError, match="accelerator"):
        ClassifierModel.model_validate({"name": "c", "accelerator": "tpu"})


@pytest.mark.parametrize("placement", ["auto", "replica"])
def test_a_gpu_classifier_runs_in_replicas_of_its_own_never_the_ingress(placement):
    from aprendiz.config import ClassifierModel

    assert ClassifierModel.model_validate({"name": "c", "accelerator": "gpu", "placement": placement})
    with pytest.raises(ValidationError, match="classifier 'c': accelerator: gpu cannot run in the ingress"):
        ClassifierModel.model_validate({"name": "c", "accelerator": "gpu", "placement": "ingress"})


def test_a_classifier_replica_is_priced_by_its_accelerator():
    from aprendiz.config import ClassifierModel, EmbeddingModel, GatewayConfig

    gateway = GatewayConfig(hourly_prices_usd={"cpu": 0.05, "L4": 0.9, "gpu": 2.0})
    assert gateway.classifier_hourly_usd(ClassifierModel(name="c", num_cpus=2)) == pytest.approx(0.1)
    half_l4 = ClassifierModel(name="c", accelerator="gpu", accelerator_type="L4", num_gpus=0.5)
    assert gateway.classifier_hourly_usd(half_l4) == pytest.approx(0.45)  # a GPU's price, not its CPUs'
    assert gateway.classifier_hourly_usd(ClassifierModel(name="c", accelerator="gpu")) == pytest.approx(2.0)
    assert gateway.classifier_hourly_usd(half_l4.model_copy(update={"hourly_usd": 0.3})) == 0.3
    assert gateway.classifier_hourly_usd(EmbeddingModel(id="e", source="/e", num_cpus=1)) == pytest.approx(0.05)


def test_stream_batching_interval_reaches_ray_serve_llm():
    from ray.serve.llm import LLMConfig

    from aprendiz.config import GeneratorModel

    unset = GeneratorModel(id="a", source="/m").llm_config()
    assert "experimental_configs" not in unset  # Ray's own default (50 ms)
    config = LLMConfig(**GeneratorModel(id="a", source="/m", stream_batching_interval_ms=10).llm_config())
    assert config.experimental_configs == {"stream_batching_interval_ms": 10.0}
    with pytest.raises(ValueError):
        GeneratorModel(id="a", source="/m", stream_batching_interval_ms=-1)


def test_a_generator_sheds_load_by_default():
    """Unbounded queues never answer 503: a burst waits instead, and clients time out."""
    assert GeneratorModel(id="m", source="/models/m").max_queued_requests == 256


def test_every_hosted_model_gets_guided_decoding_without_free_whitespace():
    """With whitespace allowed, a small model's JSON answer can be `{` and spaces until max_tokens."""
    from vllm.config import StructuredOutputsConfig

    from aprendiz.services.generator.deployment import llm_config, with_vllm_configs

    config = llm_config(GeneratorModel.model_validate(model()))
    assert config.engine_kwargs["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    made = with_vllm_configs(config).engine_kwargs["structured_outputs_config"]
    assert isinstance(made, StructuredOutputsConfig) and made.disable_any_whitespace
    own = {"structured_outputs_config": {"backend": "guidance"}}
    assert llm_config(GeneratorModel.model_validate(model(engine_kwargs=own))).engine_kwargs[
        "structured_outputs_config"] == {"backend": "guidance"}


def test_a_tool_parser_turns_tools_on_and_needs_a_template_that_renders_them(tmp_path):
    from aprendiz.services.generator.deployment import llm_config

    checkpoint = tmp_path / "m"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (checkpoint / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match="never renders `tools`"):
        GeneratorModel.model_validate(model(source=str(checkpoint), tool_parser="hermes")).resolve(None)
    (checkpoint / "chat_template.jinja").write_text("{% if tools %}{{ tools | tojson }}{% endif %}")
    generator = GeneratorModel.model_validate(model(source=str(checkpoint), tool_parser="hermes")).resolve(None)
    assert generator.capabilities().tools
    kwargs = llm_config(generator).engine_kwargs
    assert kwargs["enable_auto_tool_choice"] is True and kwargs["tool_call_parser"] == "hermes"
    assert not GeneratorModel.model_validate(model()).capabilities().tools
