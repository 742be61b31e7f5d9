"""The CPU scenario's serveConfigV2 deployed to a real local Ray head the way the KubeRay operator
does it (PUT /api/serve/applications/ on the dashboard, with Ray's auth token), then answered
through the platform's own endpoints.

The Ray head is this test's own: a `ray start --head --block` process in its own session, its own
temp dir, token and free ports; it is torn down by killing that process tree (never `ray stop`,
which would take down every Ray cluster on the machine)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from chart_support import CHART, ROOT, render

DEFAULT_MODEL = ROOT / "var" / "models" / "aprendiz-tiny-chat"
EMBEDDING_MODEL = ROOT / "var" / "models" / "minilm-embeddings"
DEPLOY_TIMEOUT_S = 240
BREAST_CANCER_ROW = [
    17.99, 10.38, 122.8, 1001, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399,
    0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189,
]


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class RayHead:
    """A local Ray head with token auth, owned by this test."""

    def __init__(self, workdir: Path, serve_env: dict[str, str]):
        self.token = secrets.token_hex(24)
        (self.gcs, self.dashboard, self.agent_http, self.agent_grpc, self.metrics, self.client, self.runtime_env,
         self.node_manager, self.object_manager, self.serve) = _free_ports(10)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="apz-ray-"))  # short: Ray's socket paths are length-limited
        self.log_path = workdir / "ray-head.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))},
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # Serve's ingress mode as the chart sets it on the head pod; HAProxy's stats and metrics on free ports.
            **serve_env,
            "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_ports(1)[0]),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_ports(1)[0]),
        }
        command = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            "--num-cpus", "8", "--object-store-memory", str(512 * 1024 * 1024), "--temp-dir", str(self.temp_dir),
            "--port", str(self.gcs), "--node-ip-address", "127.0.0.1",
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard),
            "--dashboard-agent-listen-port", str(self.agent_http), "--dashboard-agent-grpc-port", str(self.agent_grpc),
            "--metrics-export-port", str(self.metrics), "--ray-client-server-port", str(self.client),
            "--runtime-env-agent-port", str(self.runtime_env), "--node-manager-port", str(self.node_manager),
            "--object-manager-port", str(self.object_manager), "--disable-usage-stats",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{self.dashboard}"
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        serve_logs = sorted(self.temp_dir.glob("session_latest/logs/serve/controller_*.log"))
        if serve_logs:
            text += ["--- serve controller ---"] + serve_logs[-1].read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)

    def wait_for_dashboard(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/version", headers=self.headers, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        pytest.fail(f"the Ray dashboard did not answer within {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> list[str]:
        """Kill this head's process tree; returns what was still alive after SIGKILL (should be nothing)."""
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=20)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return [" ".join(p.cmdline())[:120] for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def local_values(tmp_path, job_training) -> tuple[Path, str | None]:
    """Values that point the CPU scenario at this machine: a local-folder store with a published
    breast-cancer champion, the tiny model from var/models (when built), a keys file with one key."""
    from aprendiz.config import PlatformConfig
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    store = tmp_path / "store"
    job_training.train_builtin(ModelRegistry(ObjectStore(str(store))), "breast-cancer")
    scenario = yaml.safe_load((CHART / "ci" / "cpu-values.yaml").read_text())
    generators = []
    if (DEFAULT_MODEL / "aprendiz_build.json").exists():
        generators = [{**g, "source": str(DEFAULT_MODEL)} for g in scenario["platform"]["generators"]]
    # The chart's embedding models, from the folder `make model` built here (the image's path is not on this machine).
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())["platform"]
    embeddings = [{**e, "source": str(EMBEDDING_MODEL)} for e in scenario["platform"].get(
        "embeddings", chart_values.get("embeddings", []))] if (EMBEDDING_MODEL / "embedding.json").exists() else []
    platform = {"generators": generators, "embeddings": embeddings, "store": {"url": str(store), "endpoint_url": None}}
    api_key = None
    if "gateway" in PlatformConfig.model_fields:
        from aprendiz.keys import KeyFile

        keys_file = tmp_path / "keys" / "keys.yaml"
        api_key, _ = KeyFile(keys_file).create("chart-test")
        platform["gateway"] = {"keys_file": str(keys_file), "keys_reload_s": 5}
    values = tmp_path / "local-values.yaml"
    values.write_text(yaml.safe_dump({"platform": platform, "storage": {"minio": {"enabled": False}}}))
    return values, api_key


@pytest.mark.integration
@pytest.mark.timeout(DEPLOY_TIMEOUT_S + 180)
def test_cpu_scenario_deploys_through_the_dashboard_api(helm, local_values, tmp_path):
    values, api_key = local_values
    rendered = render(helm, "-f", str(values), values=CHART / "ci" / "cpu-values.yaml")
    serve_config = rendered.serve_config()
    args = serve_config["applications"][0]["args"]
    assert args["store"]["url"].startswith(str(tmp_path))
    generators = [g["id"] for g in args["generators"]]

    head_container = rendered.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    serve_env = {e["name"]: e["value"] for e in head_container["env"] if e["name"].startswith("RAY_SERVE_")}
    assert serve_env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", "the chart's default ingress is HAProxy"
    head = RayHead(tmp_path, serve_env)
    try:
        head.wait_for_dashboard()
        # The one change to what the operator would send: the HTTP proxy on a free loopback port, not 0.0.0.0:8000.
        serve_config["http_options"] = {"host": "127.0.0.1", "port": head.serve}
        refused = httpx.put(f"{head.url}/api/serve/applications/", json=serve_config, timeout=30)
        assert refused.status_code in (401, 403), f"the dashboard took a Serve config without the token: {refused}"
        answer = httpx.put(f"{head.url}/api/serve/applications/", json=serve_config, headers=head.headers, timeout=60)
        assert answer.status_code == 200, f"PUT /api/serve/applications/: {answer.status_code} {answer.text}"

        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        status = {}
        while time.monotonic() < deadline:
            details = httpx.get(f"{head.url}/api/serve/applications/", headers=head.headers, timeout=30).json()
            status = details.get("applications", {}).get("aprendiz", {})
            if status.get("status") == "RUNNING":
                break
            if status.get("status") == "DEPLOY_FAILED":
                pytest.fail(f"Serve could not deploy the chart's application: {status.get('message')}\n{head.log_tail()}")
            time.sleep(3)
        else:
            pytest.fail(f"not RUNNING after {DEPLOY_TIMEOUT_S}s: {status}\n{head.log_tail()}")

        base = f"http://127.0.0.1:{head.serve}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            models = client.get("/v1/models")
            assert models.status_code == 200, models.text
            assert set(generators) <= {m["id"] for m in models.json()["data"]}

            prediction = client.post("/v1/models/breast-cancer:predict", json={"instances": [BREAST_CANCER_ROW]})
            assert prediction.status_code == 200, prediction.text
            assert prediction.json()["predictions"][0]["label"] == "malignant"

            v2 = client.post("/v2/models/breast-cancer/infer", json={
                "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": BREAST_CANCER_ROW}],
            })
            assert v2.status_code == 200, v2.text

            if generators:
                chat = client.post("/v1/chat/completions", json={
                    "model": generators[0], "messages": [{"role": "user", "content": "Hola"}], "max_tokens": 8,
                })
                assert chat.status_code == 200, chat.text
                assert chat.json()["usage"]["completion_tokens"] >= 1

            for embedder in args.get("embeddings", []):
                vectors = client.post("/v1/embeddings", json={"model": embedder["id"], "input": ["Hola"]})
                assert vectors.status_code == 200, vectors.text
                assert len(vectors.json()["data"][0]["embedding"]) == 384
    finally:
        leftover = head.stop()
    assert not leftover, f"processes of the test's Ray head left after the teardown: {leftover}"
