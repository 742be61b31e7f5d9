"""Training cost against dataset rows: the training job (`aprendiz train`'s run_training) on a
synthetic tabular set, each size in its own process so its peak memory is its own.

Worker: ``python -m benchmarks.training --rows 10000 --out result.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, ROOT, summary

FEATURES = 30  # the (#17) 1M rows x 30 features


def synthetic_csv(rows: int, seed: int = 0) -> bytes:
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=FEATURES, n_informative=8, random_state=seed)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
    frame["label"] = y
    return frame.to_csv(index=False, float_format="%.6g").encode()


def worker(rows: int, without: tuple[str, ...] = (), ray: str | None = None) -> dict[str, Any]:
    """One training run on ``rows`` synthetic rows, the default candidates but those named in ``without``;
    ``ray``: their grid points as Ray tasks (RayRunner at that address, "local": a Ray started for the run)."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig, default_candidates
    from aprendiz.training.job import run_training

    with tempfile.TemporaryDirectory() as root:
        store = ObjectStore(root)
        store.write_bytes("datasets/synthetic/data.csv", synthetic_csv(rows))
        started = time.perf_counter()
        config = TrainingConfig(candidates=[c for c in default_candidates() if c.name not in without])
        from aprendiz.training.parallel import RayRunner

        result = run_training(ModelRegistry(store), "synthetic", config, runner=RayRunner(ray) if ray else None)
        wall = time.perf_counter() - started
    return {
        "rows": rows,
        "wall_s": wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "candidates": {c["name"]: {"fit_seconds": c["fit_seconds"], "error": c["error"],
                                   "roc_auc": (c["metrics"] or {}).get("roc_auc")} for c in result.candidates},
        "best": result.best_candidate,
        "ray": ray,
    }


def measure(rows_list: list[int], repeats: int, log=print, without: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rows in rows_list:
        runs = []
        for r in range(repeats):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                path = Path(f.name)
            argv = [PYTHON, "-m", "benchmarks.training", "--rows", str(rows), "--out", str(path)]
            argv += [a for name in without for a in ("--without", name)]
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                runs.append({"error": proc.stderr[-1500:]})
                log(f"bench: training {rows} rows failed: {proc.stderr[-300:]}")
                continue
            runs.append(json.loads(path.read_text()))
            path.unlink()
            log(f"bench: training {rows} rows run {r + 1}: {runs[-1]['wall_s']:.1f} s, "
                f"peak {runs[-1]['peak_rss_mib']:.0f} MiB")
        ok = [x for x in runs if "error" not in x]
        names = sorted({n for x in ok for n in x["candidates"]})
        out[str(rows)] = {
            "wall_s": summary([x["wall_s"] for x in ok]),
            "peak_rss_mib": summary([x["peak_rss_mib"] for x in ok]),
            "fit_seconds": {n: summary([x["candidates"][n]["fit_seconds"] for x in ok if n in x["candidates"]])
                            for n in names},
            "without": list(without),
            "runs": runs,
        }
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--without", action="append", default=[], help="leave this default candidate out")
    parser.add_argument("--ray", help="train the candidates as Ray tasks (local: a Ray started for the run)")
    args = parser.parse_args()
    args.out.write_text(json.dumps(worker(args.rows, tuple(args.without), args.ray)))
    sys.exit(0)
