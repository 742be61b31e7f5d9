"""The training job's Ray path on a real 2-node local Ray cluster (Ray's own ``cluster_utils``: two
raylets on this machine, one CPU each): every candidate's grid points run as Ray tasks across
both nodes, and the run promotes its best with each grid point's score recorded. It runs in a
subprocess of its own, so no Ray this test process may have joined is reused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from aprendiz.training.config import CandidateConfig
from aprendiz.training.parallel import best_point, grid_points

SCRIPT = textwrap.dedent("""
    import json, sys
    from ray.cluster_utils import Cluster

    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.job import run_training
    from aprendiz.training.parallel import RayRunner
    from aprendiz.training.synthetic import TRAINING_YAML, credit_csv

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        store = ObjectStore(sys.argv[1])
        store.write_bytes("datasets/credit/data.csv", credit_csv(3000))
        store.write_bytes("datasets/credit/training.yaml", TRAINING_YAML.encode())
        config = TrainingConfig.load(store, "credit").model_copy(update={"candidates": TrainingConfig.model_validate({
            "candidates": [
                {"name": "lr", "algorithm": "logistic_regression", "search": {"C": [0.1, 1.0, 10.0]}},
                {"name": "hgb", "algorithm": "hist_gradient_boosting", "params": {"max_iter": 30},
                 "search": {"max_depth": [2, 3]}},
                {"name": "knn", "algorithm": "knn", "params": {"n_neighbors": 5}},
            ]}).candidates})
        runner = RayRunner(cluster.address)
        result = run_training(ModelRegistry(store), "credit", config, runner=runner)
        print("RESULT " + json.dumps({"nodes": len(runner.nodes), "cluster_nodes": len(cluster.list_all_nodes()),
                                      "promoted": result.promoted, "candidates": result.candidates}, default=str))
    finally:
        cluster.shutdown()
""")


@pytest.mark.timeout(420)
def test_candidates_and_grid_points_train_as_ray_tasks_across_a_2_node_cluster(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["cluster_nodes"] == 2 and result["nodes"] == 2  # the tasks ran on both nodes
    assert result["promoted"]
    rows = {c["name"]: c for c in result["candidates"]}
    assert set(rows) == {"lr", "hgb", "knn"} and all(c["error"] is None for c in rows.values())
    assert [p["params"] for p in rows["lr"]["search"]] == [{"C": 0.1}, {"C": 1.0}, {"C": 10.0}]
    assert len(rows["hgb"]["search"]) == 2 and [p["params"] for p in rows["knn"]["search"]] == [{}]  # as in-process
    best = max(rows["lr"]["search"], key=lambda p: p["validation"])
    assert rows["lr"]["params"]["C"] == best["params"]["C"]


def test_grid_points_and_the_best_point():
    from aprendiz.training.candidates import CandidateResult

    candidate = CandidateConfig(name="lr", algorithm="logistic_regression", params={"max_iter": 50},
                                search={"C": [0.1, 1.0]})
    points = grid_points(candidate)
    assert [p.params for p in points] == [{"max_iter": 50, "C": 0.1}, {"max_iter": 50, "C": 1.0}]
    assert all(p.search == {} and p.name == "lr" for p in points)
    results = [CandidateResult(name="lr", algorithm="logistic_regression", params=p.params, validation_score=v)
               for p, v in zip(points, (0.8, 0.9))]
    chosen = best_point(candidate, points, results, "roc_auc")
    assert chosen.params["C"] == 1.0 and [s["validation"] for s in chosen.search] == [0.8, 0.9]
    assert best_point(candidate, points, results, "brier").params["C"] == 0.1  # lower is better
    failed = [CandidateResult(name="lr", algorithm="logistic_regression", error="ValueError: x")] * 2
    assert best_point(candidate, points, failed, "roc_auc").error == "ValueError: x"
