"""The kind end-to-end suite: a release of charts/aprendiz in a real cluster, reached from outside.

Runs in the e2e-kind workflow (.github/workflows/e2e-kind.yml), which sets:
  APRENDIZ_E2E_BASE_URL        the Serve port, e.g. http://127.0.0.1:8000 (kubectl port-forward)
  APRENDIZ_E2E_API_KEY         a gateway API key from the release's keys Secret (optional)
  APRENDIZ_E2E_NAMESPACE       the release's namespace (default aprendiz)
  APRENDIZ_E2E_RELEASE         the release name (default aprendiz)
  APRENDIZ_E2E_PROMETHEUS_URL  Prometheus' HTTP API (the metrics test is skipped without it)
Without APRENDIZ_E2E_BASE_URL every test here is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

import httpx
import pytest

# One row of scikit-learn's breast cancer data (malignant), in the card's feature order.
BREAST_CANCER_ROW = [
    17.99, 10.38, 122.8, 1001, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399,
    0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189,
]

SKIP_REASON = (
    "no cluster configured: APRENDIZ_E2E_BASE_URL is not set (the e2e-kind workflow sets it after "
    "`helm install` of the CPU scenario into a kind cluster; see manifests/README.md to run it by hand)"
)


@dataclass(frozen=True)
class Cluster:
    base_url: str
    api_key: str | None
    namespace: str
    release: str
    prometheus_url: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        if shutil.which("kubectl") is None:
            pytest.skip("kubectl is not on PATH")
        result = subprocess.run(
            ["kubectl", "--namespace", self.namespace, *args], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def kubectl_json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json"))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    base_url = os.environ.get("APRENDIZ_E2E_BASE_URL")
    if not base_url:
        pytest.skip(SKIP_REASON)
    return Cluster(
        base_url=base_url.rstrip("/"),
        api_key=os.environ.get("APRENDIZ_E2E_API_KEY") or None,
        namespace=os.environ.get("APRENDIZ_E2E_NAMESPACE", "aprendiz"),
        release=os.environ.get("APRENDIZ_E2E_RELEASE", "aprendiz"),
        prometheus_url=os.environ.get("APRENDIZ_E2E_PROMETHEUS_URL") or None,
    )


@pytest.fixture(autouse=True)
def _needs_cluster(cluster):
    """Every e2e test needs the cluster: skipped, with the reason, when none is configured."""


@pytest.fixture
def breast_cancer_row() -> list[float]:
    return list(BREAST_CANCER_ROW)
