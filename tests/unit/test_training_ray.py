"""The training job's Ray paths on a real 2-node local Ray cluster (Ray's own ``cluster_utils``: two
raylets on this machine, one CPU each): every candidate's grid points run as Ray tasks across
both nodes, and the run promotes its best with each grid point's score recorded; and the
distributed path trains XGBoost with Ray Train, a worker on each node, on Parquet shards read by
Ray Data. Each runs in a subprocess of its own, so no Ray this test process may have joined is reused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from aprendiz.training.config import CandidateConfig
from aprendiz.training.parallel import best_point, grid_points

CLUSTER = """
import io, json, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
{body}
finally:
    cluster.shutdown()
"""


def on_cluster(body: str, store) -> dict:
    """Run ``body`` (the store's folder in sys.argv[1], ``cluster`` a 2-node Ray cluster of one CPU a
    node) in a Python of its own; the JSON it printed after "RESULT "."""
    script = CLUSTER.replace("{body}", textwrap.indent(textwrap.dedent(body), "    "))
    done = subprocess.run([sys.executable, "-c", script, str(store)], capture_output=True, text=True, timeout=400)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


GRID_POINTS = """
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.job import run_training
    from aprendiz.training.parallel import RayRunner
    from aprendiz.training.synthetic import TRAINING_YAML, credit_csv

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
"""


@pytest.mark.timeout(420)
def test_candidates_and_grid_points_train_as_ray_tasks_across_a_2_node_cluster(tmp_path):
    result = on_cluster(GRID_POINTS, tmp_path / "store")
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


DISTRIBUTED = r"""
    from aprendiz.registry import FeedbackRecord, ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.job import run_training
    from aprendiz.training.parallel import RayRunner
    from aprendiz.training.synthetic import TRAINING_YAML, credit_frame

    store = ObjectStore(sys.argv[1])
    frame = credit_frame(4500)
    frame.loc[7, "default"] = "maybe"  # one invalid row: quarantined, with its reason
    for i in range(3):  # three Parquet shards
        buffer = io.BytesIO()
        frame.iloc[i * 1500:(i + 1) * 1500].to_parquet(buffer)
        store.write_bytes(f"datasets/credit/part-{i}.parquet", buffer.getvalue())
    store.write_bytes("datasets/credit/training.yaml", (TRAINING_YAML + (
        "distributed: {workers: 2, candidate: {name: xgb, algorithm: xgboost, "
        "params: {n_estimators: 40, max_depth: 4}}}\n")).encode())
    registry = ModelRegistry(store)
    feedback = FeedbackRecord(features={"age": 30, "income": None, "balance": 9000.0, "student": "Yes",
                                        "plan": "basic", "region": "north"}, label=1)
    store.write_bytes("feedback/credit/20261206T000000Z.jsonl", (feedback.model_dump_json() + "\n").encode())
    config = TrainingConfig.load(store, "credit")
    runs = [run_training(registry, "credit", config, runner=RayRunner(cluster.address)) for _ in range(2)]
    print("RESULT " + json.dumps({
        "cluster_nodes": len(cluster.list_all_nodes()),
        "runs": [{k: r.summary()[k] for k in ("promoted", "reason", "candidates", "rows_read", "rows_quarantined",
                  "rows_used", "split", "champion_metrics", "quarantine_key", "schema_source")} for r in runs],
        "card": registry.load("credit", runs[0].version).card.model_dump(mode="json"),
        "quarantine": store.read_bytes(runs[0].quarantine_key).decode(),
    }, default=str))
"""


@pytest.mark.timeout(420)
def test_xgboost_trains_on_parquet_shards_across_two_ray_train_workers_on_a_2_node_cluster(tmp_path):
    """The distributed path (issue #17): Ray Data reads three Parquet shards from the store, Ray
    Train's XGBoostTrainer fits one model with a worker on each node (1 CPU each), the export is
    checked against the booster on every test row, and the run promotes it; a second run scores
    the champion on the same test rows in the same pass."""
    result = on_cluster(DISTRIBUTED, tmp_path / "store")
    assert result["cluster_nodes"] == 2
    first, second = result["runs"]
    assert first["promoted"], first["reason"]
    (candidate,) = first["candidates"]
    assert candidate["error"] is None and candidate["algorithm"] == "xgboost"
    workers = candidate["worker_rows"]  # one worker per node (a CPU each), each fit on its share
    assert len(workers) == 2 and min(workers) > 0 and sum(workers) == first["split"]["train"]
    assert candidate["onnx_max_diff"] <= 1e-4 and candidate["metrics"]["roc_auc"] > 0.9
    assert candidate["params"]["scale_pos_weight"] > 10  # 3 % positives
    assert "Ray Train workers" in candidate["note"]
    # 4,500 rows and the feedback record read; the bad label quarantined with its reason
    assert first["rows_read"] == 4501 and first["rows_quarantined"] == 1 and first["rows_used"] == 4500
    assert sum(first["split"].values()) == 4500 and "'maybe'" in result["quarantine"]
    assert first["schema_source"] == "inferred"
    card = result["card"]
    assert card["algorithm"] == "xgboost" and [f["name"] for f in card["features"]][:2] == ["age", "income"]
    assert card["training"]["missing_numbers"].startswith("native")
    # the second run met the first's model as champion, scored on the same (hashed) test rows
    assert second["split"] == first["split"] and second["champion_metrics"]["roc_auc"] == pytest.approx(
        candidate["metrics"]["roc_auc"], abs=1e-6)
    assert not second["promoted"] and "does not beat the champion" in second["reason"]
