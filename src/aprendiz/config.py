"""The platform configuration: which models are served, where from, on what hardware.

One structure, three readers: the local YAML file (``config/aprendiz.yaml``) read
by ``aprendiz serve``, the ``args`` of a Serve config file
(``import_path: aprendiz.services.app:build_app``), and the Helm chart, which
renders the same structure into a RayService's ``serveConfigV2``. A model on a
GPU is the same entry with another ``source`` and ``accelerator: gpu``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from aprendiz.capabilities import Capabilities, RequestCaps
from aprendiz.families import (
    DEFAULT_CHAT_TEMPLATE,
    FamilyError,
    checkpoint_chat_template,
    checkpoint_has_chat_template,
    resolve_family,
)
from aprendiz.images import ImageLimits
from aprendiz.strict import Strict

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
# The environment of a CPU engine's processes, under the model's own ``env``. vLLM 0.29's
# AOT-compiled artifact does not load back on CPU ("'function' object has no attribute
# 'finalize_loading'"), so with AOT on every start compiled the model again (16 s of the tiny
# model's start here); with it off the inductor cache is written once and loaded after.
CPU_ENGINE_ENV = {"VLLM_USE_AOT_COMPILE": "0"}
# Object stores a GPU engine streams its weights from (vLLM's Run:ai model streamer, load_format
# runai_streamer); Ray Serve LLM's own download covers the others (and every source on CPU).
STREAMED_SOURCES = ("s3://", "gs://")
# Guided decoding (response_format, forced tool calls) on every hosted model: xgrammar, with no
# free whitespace between JSON tokens. With whitespace allowed, a small model can emit `{` and
# then spaces and newlines until max_tokens, and the answer never parses.
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


class Autoscaling(Strict):
    """Ray Serve autoscaling for one deployment."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0, description="Serve's default when unset (30 s).")
    downscale_delay_s: float | None = Field(None, ge=0, description="Serve's default when unset (600 s).")

    def serve_options(self) -> dict[str, Any]:
        """Ray Serve's autoscaling_config (unset delays keep Serve's defaults)."""
        return self.model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class StoreConfig(Strict):
    """The object store holding the model registry, datasets and feedback (fsspec)."""

    url: str = Field(
        ".aprendiz/store",
        min_length=1,
        description="A local folder (relative paths: against the config file's folder) or s3://bucket/prefix.",
    )
    endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, moto); credentials come from the standard AWS variables."
    )

    def resolve(self, base_dir: Path | None) -> "StoreConfig":
        if base_dir is None or "://" in self.url or Path(self.url).is_absolute():
            return self
        return self.model_copy(update={"url": str((base_dir / self.url).resolve())})

    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}


class LoraSettings(Strict):
    """LoRA adapters on a generator: peft folders in the store under ``loras/<model id>/<adapter>/``,
    called as the model ``<model id>:<adapter>``."""

    max_adapters_per_replica: int = Field(
        4, ge=1, le=64, description="Adapters one replica holds at once (least recently used are dropped)."
    )
    max_rank: Literal[8, 16, 32, 64, 128, 256] = Field(16, description="Largest adapter rank the engine accepts.")
    store: StoreConfig | None = Field(None, description="Where the adapters are; unset: the platform's store.")


class GeneratorModel(Strict):
    """A hosted text generator: one ``ray.serve.llm`` LLMServer deployment running vLLM."""

    id: str = Field(pattern=MODEL_ID_PATTERN, description="Model name clients send as `model`.")
    source: str = Field(
        min_length=1,
        description=(
            "Where the weights are: a local folder (relative paths are resolved against the config "
            "file's folder), a Hugging Face id, or an object-store URI (s3://, gs://). On GPU an object-store "
            "source is streamed into GPU memory by vLLM's Run:ai model streamer (engine_kwargs.load_format "
            "runai_streamer unless set); otherwise it is downloaded to the node first."
        ),
    )
    family: str | None = Field(
        None,
        description="Model family (aprendiz.families: llama, flor, gpt-neox); unset: read from a local checkpoint.",
    )
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template; unset: the checkpoint's own, or the platform's default if it has none.",
    )
    accelerator: Literal["cpu", "gpu"] = "cpu"
    accelerator_type: str | None = Field(None, description="Ray accelerator type on GPU, e.g. L4 or A10G.")
    num_cpus: float = Field(1, gt=0, description="CPUs of the engine's placement bundle on CPU.")
    num_gpus: int = Field(1, ge=1, description="GPUs per replica on GPU (tensor parallel size).")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vLLM engine arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the engine's workers.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one replica takes at once.")
    stream_batching: Literal["adaptive", "fixed", "off"] = Field(
        "adaptive",
        description=(
            "How a replica groups a stream's tokens before sending them on. adaptive: a token that finds the stream "
            "quiet for a window (the first, or the first after a pause) goes at once, the tokens behind it within "
            "the window go together; fixed: Ray Serve LLM's batcher, every window (the first token waits for it); "
            "off: every token alone."
        ),
    )
    stream_batching_interval_ms: float | None = Field(
        None,
        ge=0,
        description=(
            "The stream batching window (Ray Serve LLM's stream_batching_interval_ms; unset: Ray's 50 ms); "
            "0 sends each token alone."
        ),
    )
    max_queued_requests: int = Field(
        256, ge=-1,
        description=(
            "Requests waiting for a replica (each at max_ongoing_requests) before the queue counts as full: the "
            "next is a 503 with Retry-After, or goes to the fallback (-1: unbounded, never shedding load)."
        ),
    )
    lora: LoraSettings | None = Field(None, description="Serve LoRA adapters of this model (unset: none).")
    tool_parser: str | None = Field(
        None,
        pattern=r"^[a-z0-9_]+$",
        description=(
            "vLLM's tool-call parser for this model's output (e.g. hermes, llama3_json, mistral); turns on tools and "
            "tool_choice. The chat template must render `tools`. Unset: the model takes no tools (a 400 says so)."
        ),
    )
    request_caps: RequestCaps = Field(default_factory=RequestCaps)
    fallback: str | None = Field(
        None, description="A rented model id that takes this model's requests when its queue is full or it is down."
    )
    fallback_after_s: float = Field(
        30.0, gt=0,
        description=(
            "With a fallback: how long a stream waits for its first token before falling back. A non-streamed "
            "request arrives whole and does not fall back for slowness (a long answer would be billed twice)."
        ),
    )
    hourly_usd: float | None = Field(
        None, ge=0, description="Price of one replica per hour; unset: gateway.hourly_prices_usd by accelerator."
    )

    @model_validator(mode="after")
    def _accelerator(self) -> "GeneratorModel":
        if self.accelerator == "cpu" and self.accelerator_type:
            raise ValueError("accelerator_type is only meaningful with accelerator: gpu")
        return self

    def check_family(self) -> "GeneratorModel":
        """Check the family against the checkpoint and the accelerator (raises ConfigError)."""
        try:
            family = resolve_family(self.id, self.family, self.source, self.accelerator)
        except FamilyError as exc:
            raise ConfigError(str(exc)) from None
        if self.lora is not None and family is not None and not family.lora:
            raise ConfigError(
                f"model {self.id!r}: the {family.name} family ({family.architecture}) has no LoRA support in vLLM; "
                "remove its lora block"
            )
        return self if family is None or self.family else self.model_copy(update={"family": family.name})

    def chat_template_text(self) -> str | None:
        """The chat template the engine will use: the config's, the checkpoint's, or the platform's
        default for a checkpoint without one (None: not known before the engine loads it)."""
        if self.chat_template:
            return self.chat_template
        if "://" in self.source:
            return None
        if checkpoint_has_chat_template(Path(self.source)) is False:
            return DEFAULT_CHAT_TEMPLATE
        return checkpoint_chat_template(Path(self.source))

    def check_tools(self) -> "GeneratorModel":
        """A tool parser needs a chat template that shows the model the tools (raises ConfigError)."""
        template = self.chat_template_text() if self.tool_parser else None
        if template is not None and "tools" not in template:
            raise ConfigError(
                f"model {self.id!r}: tool_parser is {self.tool_parser!r} but its chat template never renders `tools`, "
                "so the model would not see them; set a chat_template that does, or remove tool_parser"
            )
        return self

    def capabilities(self) -> Capabilities:
        """What this hosted model supports (aprendiz.capabilities): everything vLLM does, tools only
        with a tool parser."""
        return Capabilities(tools=self.tool_parser is not None)

    def resolve(self, base_dir: Path | None) -> "GeneratorModel":
        """Relative paths made absolute (source, adapter store), then the family and tools checked."""
        model = self.resolve_source(base_dir)
        if model.lora is not None and model.lora.store is not None:
            lora = model.lora.model_copy(update={"store": model.lora.store.resolve(base_dir)})
            model = model.model_copy(update={"lora": lora})
        return model.check_family().check_tools()

    def resolve_source(self, base_dir: Path | None) -> "GeneratorModel":
        """Return a copy whose relative local ``source`` is made absolute against ``base_dir``."""
        if base_dir is None or "://" in self.source or Path(self.source).is_absolute():
            return self
        candidate = (base_dir / self.source).resolve()
        if self.source.startswith((".", "/")) or candidate.exists():
            return self.model_copy(update={"source": str(candidate)})
        return self  # a Hugging Face id such as org/name

    def engine_env(self) -> dict[str, str]:
        """The environment of the engine's processes: the model's ``env`` over the CPU defaults."""
        return {**(CPU_ENGINE_ENV if self.accelerator == "cpu" else {}), **self.env}

    def llm_config(self) -> dict[str, Any]:
        """The ``ray.serve.llm.LLMConfig`` fields for this model, as plain data."""
        loading: dict[str, Any] = {"model_id": self.id}
        if "://" in self.source:
            loading["model_source"] = {"bucket_uri": self.source}
        else:
            loading["model_source"] = self.source
        engine_kwargs = {"structured_outputs_config": dict(STRUCTURED_OUTPUTS), **self.engine_kwargs}
        if self.tool_parser:
            engine_kwargs.setdefault("enable_auto_tool_choice", True)
            engine_kwargs.setdefault("tool_call_parser", self.tool_parser)
        if self.chat_template:
            engine_kwargs["chat_template"] = self.chat_template
        elif "://" not in self.source and checkpoint_has_chat_template(Path(self.source)) is False:
            engine_kwargs["chat_template"] = DEFAULT_CHAT_TEMPLATE
        deployment: dict[str, Any] = {
            "autoscaling_config": self.autoscaling.serve_options(),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        config: dict[str, Any] = {
            "model_loading_config": loading,
            "engine_kwargs": engine_kwargs,
            "deployment_config": deployment,
            "runtime_env": {"env_vars": env} if (env := self.engine_env()) else None,
        }
        if self.stream_batching_interval_ms is not None:
            config["experimental_configs"] = {"stream_batching_interval_ms": self.stream_batching_interval_ms}
        if self.lora is not None:
            # The adapters come from the object store through our own loader (see the generator
            # deployment), so Ray's cloud path stays unset.
            config["lora_config"] = {"max_num_adapters_per_replica": self.lora.max_adapters_per_replica}
            engine_kwargs.setdefault("enable_lora", True)
            engine_kwargs.setdefault("max_loras", self.lora.max_adapters_per_replica)
            engine_kwargs.setdefault("max_cpu_loras", self.lora.max_adapters_per_replica)
            engine_kwargs.setdefault("max_lora_rank", self.lora.max_rank)
        if self.accelerator == "gpu":
            engine_kwargs.setdefault("tensor_parallel_size", self.num_gpus)
            if self.source.startswith(STREAMED_SOURCES):
                # vLLM's Run:ai model streamer reads the safetensors from the bucket into GPU memory, many
                # ranges at once, while Ray Serve LLM downloads only the config and tokenizer: no copy of
                # the weights on the node's disk first (the serve-gpu image installs the streamer).
                engine_kwargs.setdefault("load_format", "runai_streamer")
            if self.accelerator_type:
                config["accelerator_type"] = self.accelerator_type
        else:
            # ray.serve.llm asks for a GPU bundle by default; on CPU the engine gets a CPU bundle.
            config["placement_group_config"] = {"bundles": [{"CPU": self.num_cpus}]}
        return config


class ClassifierModel(Strict):
    """A binary classifier served from the registry: the champion version of ``models/<name>/``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Registry name, also the URL name.")
    store: StoreConfig | None = Field(None, description="Overrides the platform's store for this model.")
    version: str | None = Field(
        None, description="Pin a version; unset follows champion.json. Changing it reconfigures replicas in place."
    )
    placement: Literal["auto", "ingress", "replica"] = Field(
        "auto",
        description=(
            "Where the model runs. ingress: inside the ingress replicas' process, with no call to another "
            "process (light models: tabular and TF-IDF graphs); replica: a deployment of its own, with the "
            "autoscaling, batching and num_cpus below (heavy models: transformer encoders, image networks). "
            "auto: ingress when the serving version's card records under 1 ms a row and 32 MiB, else replica "
            "(services/classifier/placement.py)."
        ),
    )
    poll_interval_s: float = Field(5.0, gt=0, description="How often each replica holding the model checks champion.json.")
    max_batch_size: int = Field(64, ge=1, description="Requests grouped into one onnxruntime call.")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description=(
            "How long a batch waits to fill. 0: no waiting; requests that arrive while a batch runs form the "
            "next one. A 2 ms wait cost the breast-cancer classifier half its requests/s at concurrency 1 and "
            "gained nothing under load (docs/benchmarks.md); a heavier model may gain from a wait."
        ),
    )
    max_instances: int = Field(1024, ge=1, description="Instances one request may carry.")
    image_limits: ImageLimits = Field(
        default_factory=ImageLimits,
        description="Image models: the largest encoded image (bytes) and the most pixels accepted; larger ones get a "
                    "400 before they are decoded (the body itself is bounded by ingress.max_body_bytes).",
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(128, ge=1)
    max_queued_requests: int = Field(2048, ge=-1, description="-1: unbounded.")
    num_cpus: float = Field(0.5, gt=0)
    accelerator: Literal["cpu", "gpu"] = Field(
        "cpu",
        description=(
            "cpu, or gpu: onnxruntime's CUDA execution provider (CPU the fallback) in replicas of their own on "
            "the GPU workers; never placement: ingress (services/classifier/providers.py)."
        ),
    )
    accelerator_type: str | None = Field(None, description="Ray accelerator type on GPU, e.g. L4 or A10G.")
    num_gpus: float = Field(
        1, gt=0, description="GPUs per replica on GPU; a fraction shares one GPU between replicas (e.g. 0.5)."
    )
    hourly_usd: float | None = Field(
        None,
        ge=0,
        description=(
            "Price of one replica per hour; unset: gateway.hourly_prices_usd['cpu'] x num_cpus on CPU, the "
            "accelerator type's price (else 'gpu') x num_gpus on GPU."
        ),
    )

    @model_validator(mode="after")
    def _accelerator(self) -> "ClassifierModel":
        if self.accelerator == "cpu" and self.accelerator_type:
            raise ValueError(f"classifier {self.name!r}: accelerator_type is only meaningful with accelerator: gpu")
        if self.accelerator == "gpu" and self.placement == "ingress":
            raise ValueError(
                f"classifier {self.name!r}: accelerator: gpu cannot run in the ingress (its replicas hold no GPU); "
                "use placement: replica or auto"
            )
        return self


class EmbeddingModel(Strict):
    """A hosted sentence encoder behind ``POST /v1/embeddings``: an ONNX model on onnxruntime, in
    replicas of its own (``aprendiz build-embedding-model`` writes the default, all-MiniLM-L6-v2)."""

    id: str = Field(pattern=MODEL_ID_PATTERN, description="Model name clients send as `model`.")
    source: str = Field(
        min_length=1,
        description=(
            "A local folder holding model.onnx, tokenizer.json and embedding.json (relative paths are resolved "
            "against the config file's folder)."
        ),
    )
    num_cpus: float = Field(1, gt=0, description="CPUs per replica (onnxruntime's threads follow).")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    max_ongoing_requests: int = Field(32, ge=1, description="Requests one replica takes at once.")
    max_queued_requests: int = Field(256, ge=-1, description="Requests waiting for a replica before a 503.")
    max_inputs: int = Field(256, ge=1, le=2048, description="Most texts in one request (OpenAI's limit is 2,048).")
    hourly_usd: float | None = Field(
        None, ge=0, description="Price of one replica per hour; unset: gateway.hourly_prices_usd's cpu price."
    )

    def resolve(self, base_dir: Path | None) -> "EmbeddingModel":
        if base_dir is None or "://" in self.source or Path(self.source).is_absolute():
            return self
        return self.model_copy(update={"source": str((base_dir / self.source).resolve())})


class RentedModel(Strict):
    """A model rented from an OpenAI-compatible provider, reached through the same entrance."""

    id: str = Field(pattern=MODEL_ID_PATTERN, description="Model name clients send as `model`.")
    base_url: str = Field(
        pattern=r"^https?://", description="The provider's OpenAI API base, e.g. https://api.openai.com/v1."
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the provider's API key (from a Secret); never the key itself.",
    )
    upstream_model: str = Field(min_length=1, description="The model name the provider knows.")
    kind: Literal["chat", "embedding"] = Field(
        "chat", description="chat: /chat/completions and /completions; embedding: /embeddings."
    )
    timeout_s: float = Field(60.0, gt=0, description="Longest wait for the provider (connect, and between chunks).")
    input_usd_per_million: float = Field(0.0, ge=0, description="Price of one million prompt tokens.")
    output_usd_per_million: float = Field(0.0, ge=0, description="Price of one million completion tokens.")
    tokenizer: str | None = Field(
        None, description="A tokenizer.json (or a folder holding one) to count tokens when the provider gives no usage."
    )
    fallback: str | None = Field(
        None, description="A hosted generator id that takes this model's requests when the provider fails."
    )
    capabilities: Capabilities = Field(
        default_factory=Capabilities,
        description="What the provider's model supports (unset: everything); a request for more is a 400.",
    )
    request_caps: RequestCaps = Field(default_factory=RequestCaps)

    def resolve(self, base_dir: Path | None) -> "RentedModel":
        if base_dir is None or not self.tokenizer or Path(self.tokenizer).is_absolute():
            return self
        return self.model_copy(update={"tokenizer": str((base_dir / self.tokenizer).resolve())})

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_million + completion_tokens * self.output_usd_per_million) / 1e6


DEFAULT_HOURLY_PRICES_USD = {
    # On-demand list prices of one unit per hour, rounded (2026 cloud lists); override per deployment.
    "cpu": 0.04,
    "T4": 0.35,
    "L4": 0.80,
    "A10G": 1.01,
    "L40S": 1.86,
    "A100": 3.67,
    "H100": 6.98,
    "gpu": 3.67,
}


class GatewayConfig(Strict):
    """Who may call the entrance, how often, and what each replica costs."""

    keys_file: str | None = Field(
        None,
        description=(
            "The API key file (hashed keys, `aprendiz keys`); relative paths: against the config file's folder. "
            "Unset: no authentication, and the entrance only listens on loopback."
        ),
    )
    keys_reload_s: float = Field(5.0, gt=0, description="How often replicas re-read the key file.")
    limiter_timeout_s: float = Field(
        1.0, gt=0,
        description="How long the ingress waits for the rate limiter; past it (or if the limiter fails) the "
                    "request is let through unlimited (fail open), counted in aprendiz_gateway_limiter_fail_open_total.",
    )
    hourly_prices_usd: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HOURLY_PRICES_USD),
        description="Price per hour of one unit by accelerator type: `cpu` per CPU, GPU types per GPU, `gpu` otherwise.",
    )
    hosting_upkeep_usd_per_month: float = Field(
        0.0, ge=0,
        description=(
            "What hosting costs beside the replicas, per month: the engineering time and the storage it takes. "
            "Added to a hosted model's cost in the rent-or-host break-even (`aprendiz cost`, `aprendiz evaluate`)."
        ),
    )

    def resolve(self, base_dir: Path | None) -> "GatewayConfig":
        if base_dir is None or not self.keys_file or "://" in self.keys_file or Path(self.keys_file).is_absolute():
            return self
        return self.model_copy(update={"keys_file": str((base_dir / self.keys_file).resolve())})

    def unit_price(self, accelerator_type: str) -> float:
        prices = {**DEFAULT_HOURLY_PRICES_USD, **self.hourly_prices_usd}
        return prices.get(accelerator_type, prices["gpu"])

    def generator_hourly_usd(self, model: GeneratorModel) -> float:
        if model.hourly_usd is not None:
            return model.hourly_usd
        if model.accelerator == "cpu":
            return self.unit_price("cpu") * model.num_cpus
        return self.unit_price(model.accelerator_type or "gpu") * model.num_gpus

    def classifier_hourly_usd(self, model: "ClassifierModel | EmbeddingModel") -> float:
        if model.hourly_usd is not None:
            return model.hourly_usd
        if isinstance(model, ClassifierModel) and model.accelerator == "gpu":
            return self.unit_price(model.accelerator_type or "gpu") * model.num_gpus
        return self.unit_price("cpu") * model.num_cpus


class IngressConfig(Strict):
    """The one entrance (route prefix ``/``) in front of every model."""

    autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(min_replicas=1, max_replicas=2))
    max_ongoing_requests: int = Field(256, ge=1)
    num_cpus: float = Field(1, ge=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Larger bodies are refused with 413.")
    gc_young_threshold: int | None = Field(
        50_000,
        ge=1,
        description=(
            "Python's young-generation GC threshold in the ingress and classifier replicas (Python's default is "
            "700; null keeps it). With 700 a full collection ran about twice a second under load and stalled the "
            "event loop about 90 ms each time, which was the classifier path's p99 (docs/benchmarks.md)."
        ),
    )
    access_log: bool = Field(
        False,
        description=(
            "Ray Serve's access log line per request in the ingress and classifier replicas. Off by default: at "
            "hundreds of requests/s writing it cost about a tenth of the classifier's throughput "
            "(docs/benchmarks.md), and every answer is counted and timed by route, model and status in the "
            "aprendiz_ingress_* metrics anyway. Warnings and errors are logged either way."
        ),
    )


class PlatformConfig(Strict):
    """Everything one aprendiz application serves."""

    generators: list[GeneratorModel] = Field(default_factory=list)
    embeddings: list[EmbeddingModel] = Field(default_factory=list, description="Hosted embedding models.")
    rented: list[RentedModel] = Field(default_factory=list, description="Models rented from OpenAI-compatible providers.")
    classifiers: list[ClassifierModel] = Field(default_factory=list)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)

    @model_validator(mode="after")
    def _models(self) -> "PlatformConfig":
        if not self.generators and not self.classifiers and not self.rented and not self.embeddings:
            raise ValueError(
                "the config serves no model: list at least one of generators, embeddings, rented or classifiers"
            )
        generator_ids = [g.id for g in self.generators] + [e.id for e in self.embeddings] + [r.id for r in self.rented]
        for kind, names in (("generator id", generator_ids), ("classifier name", [c.name for c in self.classifiers])):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(
                    f"{kind} {name!r} appears twice (generator, embedding and rented model ids share one namespace)"
                )
                seen.add(name)
        hosted, rented = {g.id for g in self.generators}, {r.id for r in self.rented if r.kind == "chat"}
        for g in self.generators:
            if g.fallback is not None and g.fallback not in rented:
                raise ValueError(f"generator {g.id!r}: fallback {g.fallback!r} is not a rented model id ({sorted(rented)})")
        for r in self.rented:
            if r.fallback is not None and r.kind == "embedding":
                raise ValueError(f"rented model {r.id!r}: an embedding model has no fallback (another model's vectors "
                                 "are not comparable with its own)")
            if r.fallback is not None and r.fallback not in hosted:
                raise ValueError(f"rented model {r.id!r}: fallback {r.fallback!r} is not a generator id ({sorted(hosted)})")
        return self

    def store_for(self, classifier: ClassifierModel) -> StoreConfig:
        return classifier.store or self.store

    def lora_store_for(self, generator: GeneratorModel) -> StoreConfig | None:
        if generator.lora is None:
            return None
        return generator.lora.store or self.store

    def resolved(self, base_dir: Path | None) -> "PlatformConfig":
        return self.model_copy(
            update={
                "generators": [m.resolve(base_dir) for m in self.generators],
                "embeddings": [e.resolve(base_dir) for e in self.embeddings],
                "store": self.store.resolve(base_dir),
                "gateway": self.gateway.resolve(base_dir),
                "rented": [r.resolve(base_dir) for r in self.rented],
                "classifiers": [
                    c.model_copy(update={"store": c.store.resolve(base_dir)}) if c.store else c
                    for c in self.classifiers
                ],
            }
        )

    @classmethod
    def from_yaml(cls, path: Path) -> "PlatformConfig":
        """Read and validate a config file; relative model paths are taken from its folder."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
        return cls.model_validate(data).resolved(path.resolve().parent)


class ConfigError(ValueError):
    """The platform configuration cannot be used."""
