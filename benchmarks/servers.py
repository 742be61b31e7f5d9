"""The servers under test, each started as a user would start it, on free loopback ports:

- aprendiz: ``aprendiz serve`` with a config written here (the shipped generator settings,
  the breast-cancer classifier from a scratch store, fixed replica counts);
- plain vLLM: ``python -m vllm.entrypoints.openai.api_server`` with the same engine settings;
- KServe: ``python -m benchmarks.kserve_server`` with the same ONNX bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import PYTHON, ROOT, VENV_BIN, WORK, Server, free_port, free_ports

MODEL_ID = "aprendiz-tiny-chat"
CLASSIFIER = "breast-cancer"
TEXT_CLASSIFIER = "es-or-en"
MINILM_CLASSIFIER = "es-or-en-minilm"
SHIPPED_CONFIG = ROOT / "config" / "aprendiz.yaml"
START_TIMEOUT_S = 900

# Ray Serve's ingress modes, as the environment of `aprendiz serve` (which passes Serve's variables
# to the Ray cluster it starts). `default` is what a plain `aprendiz serve` runs: HAProxy.
SERVE_MODES: dict[str, dict[str, str]] = {
    "default": {},
    "proxy": {"APRENDIZ_SERVE_INGRESS": "proxy"},
    "throughput": {"APRENDIZ_SERVE_INGRESS": "proxy", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}


# Ray starts its worker processes at nice 15 (RayConfig worker_niceness), so aprendiz's replicas and the
# engine they spawn run at 15 while the load generator runs at 0 on the same 2 cores and is scheduled
# first whenever both are ready. The peers (plain vLLM, KServe) run at the same niceness, so the
# load generator takes the same share from each server it measures.
PEER_NICENESS = 15


def shipped_generator() -> dict[str, Any]:
    """The shipped config's generator, resolved (its source an absolute path)."""
    from aprendiz.config import PlatformConfig

    generator = PlatformConfig.from_yaml(SHIPPED_CONFIG).generators[0]
    return generator.model_dump(mode="json", exclude_none=True)


def model_path() -> Path:
    return Path(shipped_generator()["source"])


def engine_settings() -> dict[str, Any]:
    """The shipped generator's engine arguments and its engine's environment, as the platform gives
    them to vLLM (the model's ``env`` over the CPU defaults: AOT compile off, so a start loads the
    compile cache): plain vLLM gets the same."""
    from aprendiz.config import PlatformConfig

    g = PlatformConfig.from_yaml(SHIPPED_CONFIG).generators[0]
    return {"engine_kwargs": g.engine_kwargs, "env": g.engine_env()}


def prepare_store(root: Path = WORK / "store", *, text: bool = False) -> tuple[str, bytes]:
    """A scratch store with breast-cancer (and es-or-en with ``text``) trained by the training job
    with its shipped defaults, as `make run` trains them; returns (url, the breast-cancer ONNX bytes)."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.dataset import seed_builtin
    from aprendiz.training.job import run_training

    root.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry(ObjectStore(str(root)))
    for name in (CLASSIFIER, TEXT_CLASSIFIER) if text else (CLASSIFIER,):
        if registry.champion(name) is None:
            seed_builtin(registry.store, name)
            run_training(registry, name)
    champion = registry.champion(CLASSIFIER)
    return str(root), registry.load(CLASSIFIER, champion.version).onnx_bytes


def prepare_text_store(root: Path = WORK / "store-text") -> str:
    """A scratch store with the two kinds of text model for es-or-en: ``es-or-en`` the TF-IDF graph
    (light: placement auto puts it in the ingress) and ``es-or-en-minilm`` MiniLM embeddings (heavy:
    replicas of its own), each trained by the training job with that one candidate."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.dataset import seed_builtin
    from aprendiz.training.job import run_training

    registry = ModelRegistry(ObjectStore(str(root)))
    for name, algorithm in ((TEXT_CLASSIFIER, "tfidf_logreg"), (MINILM_CLASSIFIER, "minilm_logreg")):
        if registry.champion(name) is None:
            seed_builtin(registry.store, name, TEXT_CLASSIFIER)
            config = {"labels": ["english", "spanish"], "candidates": [{"name": algorithm, "algorithm": algorithm}]}
            run_training(registry, name, TrainingConfig.model_validate(config))
    return str(root)


def platform_config(
    path: Path, *, store_url: str, generator: bool = True, classifier_replicas: int = 1,
    keys_file: Path | None = None, classifiers: tuple[str, ...] = (CLASSIFIER,),
    classifier_options: dict[str, Any] | None = None, ingress_replicas: int = 1,
    ingress_options: dict[str, Any] | None = None, generator_options: dict[str, Any] | None = None,
) -> Path:
    """A platform config: fixed replica counts (1 ingress, 1 engine) so runs compare like with like.
    Classifiers are placed as ``auto`` decides unless ``classifier_options`` says ``placement``."""
    config: dict[str, Any] = {
        "generators": [],
        "classifiers": [
            {
                "name": name,
                "poll_interval_s": 5,
                "max_batch_size": 64,
                "autoscaling": {"min_replicas": classifier_replicas, "max_replicas": classifier_replicas},
                "max_ongoing_requests": 128,
                "max_queued_requests": 2048,
                **(classifier_options or {}),
            }
            for name in classifiers
        ],
        "store": {"url": store_url},
        "ingress": {"autoscaling": {"min_replicas": ingress_replicas, "max_replicas": ingress_replicas},
                    "max_ongoing_requests": 256, **(ingress_options or {})},
    }
    if generator:
        g = shipped_generator()
        g["autoscaling"] = {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 16}
        g.update(generator_options or {})
        config["generators"].append(g)
    if keys_file is not None:
        config["gateway"] = {"keys_file": str(keys_file), "keys_reload_s": 30}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def create_key(keys_file: Path) -> str:
    """One key allowed every model and without limits, as `aprendiz keys create bench` makes it."""
    from aprendiz.keys import KeyFile

    if keys_file.exists():
        keys_file.unlink()
    return KeyFile(keys_file).create("bench")[0]


class Aprendiz:
    """`aprendiz serve` in a subprocess; ``url`` once it has printed its banner and /readyz is 200."""

    def __init__(self, config: Path, *, name: str = "aprendiz", serve_mode: str = "default",
                 env: dict[str, str] | None = None):
        self.port, self.metrics_port, stats_port, haproxy_metrics_port = free_ports(4)  # distinct
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve_mode = serve_mode
        env = {
            "APRENDIZ_CONFIG_FILE": str(config),
            "APRENDIZ_PORT": str(self.port),
            "APRENDIZ_METRICS_EXPORT_PORT": str(self.metrics_port),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(haproxy_metrics_port),
            **SERVE_MODES[serve_mode],
            **(env or {}),
        }
        self.server = Server(name, [str(VENV_BIN / "aprendiz"), "serve"], env=env)
        self.ready_s: float | None = None

    def start(self) -> "Aprendiz":
        self.server.start()

        def ready() -> bool:
            if "aprendiz is serving" not in self.server.log_path.read_text(errors="replace"):
                return False
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200

        self.ready_s = self.server.wait_for(ready, START_TIMEOUT_S)
        return self

    def stop(self) -> int | None:
        return self.server.stop()


class PlainVllm:
    """vLLM's own OpenAI server, same model, engine settings and KV cache as the platform's."""

    def __init__(self, name: str = "vllm"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = engine_settings()
        kw = settings["engine_kwargs"]
        argv = [
            PYTHON, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_path()), "--served-model-name", MODEL_ID,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(kw.get("max_model_len", 512)),
            "--dtype", str(kw.get("dtype", "float32")),
            "--max-num-seqs", str(kw.get("max_num_seqs", 32)),
        ]
        self.server = Server(name, argv, env={**settings["env"], "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO")},
                             niceness=PEER_NICENESS)
        self.ready_s: float | None = None

    def start(self) -> "PlainVllm":
        self.server.start()
        self.ready_s = self.server.wait_for(
            lambda: httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200, START_TIMEOUT_S
        )
        return self

    def stop(self) -> int | None:
        return self.server.stop()


class KServeServer:
    def __init__(self, model_file: Path, name: str = "kserve"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [PYTHON, "-m", "benchmarks.kserve_server", "--model-file", str(model_file), "--port", str(self.port)]
        self.server = Server(name, argv, niceness=PEER_NICENESS)
        self.ready_s: float | None = None

    def start(self) -> "KServeServer":
        self.server.start()
        self.ready_s = self.server.wait_for(
            lambda: httpx.get(f"{self.url}/v2/models/{CLASSIFIER}/ready", timeout=5).status_code == 200, 120
        )
        return self

    def stop(self) -> int | None:
        return self.server.stop()
