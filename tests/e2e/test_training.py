"""Training in the cluster: the install-time Job promoted the champion the service serves, and a
run started from the CronJob (what an operator does on demand) completes and is served."""

from __future__ import annotations

import re
import time

JOB_TIMEOUT_S = 900


def _served_version(cluster, row) -> str:
    with cluster.client() as client:
        answer = client.post("/v1/models/breast-cancer:predict", json={"instances": [row]})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]["model_version"]


def _wait_for_job(cluster, name: str) -> str:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = cluster.kubectl_json("get", "job", name).get("status", {})
        if status.get("succeeded"):
            return cluster.kubectl("logs", f"job/{name}", "--container", "train")
        if status.get("failed"):
            logs = cluster.kubectl("logs", f"job/{name}", "--container", "train")
            raise AssertionError(f"job {name} failed:\n{logs[-3000:]}")
        time.sleep(5)
    raise AssertionError(f"job {name} did not finish within {JOB_TIMEOUT_S}s")


def _verdict(logs: str) -> re.Match:
    verdict = re.search(r"aprendiz: breast-cancer: best \S+; (promoted (\S+)|not promoted):", logs)
    assert verdict, f"no verdict line in the training log:\n{logs[-3000:]}"
    return verdict


def test_install_job_promoted_the_served_champion(cluster, breast_cancer_row):
    logs = _wait_for_job(cluster, f"{cluster.release}-train-breast-cancer-install")
    verdict = _verdict(logs)
    assert verdict.group(2), f"the first run on an empty store must promote: {verdict.group(0)}"
    assert _served_version(cluster, breast_cancer_row) == verdict.group(2)


def test_on_demand_run_from_the_cronjob_is_served(cluster, breast_cancer_row):
    before = _served_version(cluster, breast_cancer_row)
    name = f"e2e-train-{int(time.time())}"
    cluster.kubectl("create", "job", f"--from=cronjob/{cluster.release}-train-breast-cancer", name)
    verdict = _verdict(_wait_for_job(cluster, name))
    expected = verdict.group(2) or before
    deadline = time.monotonic() + 120  # replicas poll champion.json (poll_interval_s)
    while _served_version(cluster, breast_cancer_row) != expected and time.monotonic() < deadline:
        time.sleep(2)
    assert _served_version(cluster, breast_cancer_row) == expected, f"after `{verdict.group(0)}` the service serves another version"
