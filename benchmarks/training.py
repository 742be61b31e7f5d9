"""Training cost against dataset rows: the training job (`aprendiz train`'s run_training) on a
synthetic tabular set, each size in its own process so its peak memory is its own.

Worker: ``python -m benchmarks.training --rows 10000 --out result.json``; ``--ray local`` fits the
candidates as Ray tasks; ``--distributed 2`` writes the rows as Parquet shards and trains through
the distributed path (Ray Data, Ray Train's XGBoostTrainer with that many workers), sampling the
memory of every process of the run (the job's and Ray's) as it goes.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, ROOT, process_role, summary

FEATURES = 30  # the (#17) 1M rows x 30 features


def synthetic_csv(rows: int, seed: int = 0) -> bytes:
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=FEATURES, n_informative=8, random_state=seed)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
    frame["label"] = y
    return frame.to_csv(index=False, float_format="%.6g").encode()


SHARD_ROWS = 500_000  # rows per Parquet shard of the distributed runs


def write_parquet_shards(store, name: str, rows: int, seed: int = 0, shard_rows: int = SHARD_ROWS) -> int:
    """``rows`` synthetic rows of FEATURES float32 columns and a label (about 5 % positive, from a
    fixed nonlinear rule and noise) as Parquet shards under datasets/<name>/, one shard generated
    at a time (the whole set is never in memory); returns the bytes written."""
    import numpy as np
    import pandas as pd

    weights = np.random.default_rng(seed).normal(size=FEATURES)
    written = 0
    for index, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        rng = np.random.default_rng([seed, index])
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        logit = x @ weights * 0.6 + 1.5 * np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] - 4.0
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
        frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        store.write_bytes(f"datasets/{name}/part-{index:05d}.parquet", buffer.getvalue())
        written += buffer.tell()
    return written


class MemorySampler:
    """The peak resident memory of this process and every process below it (Ray's raylet, GCS,
    workers, actors, when this process started Ray), sampled every ``every_s``. A Ray process is
    named by its title (ray::RayTrainWorker, ray::MapWorker(...), raylet, gcs_server); the
    object store's shared memory counts in each process that maps it, so the sum overstates."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.peaks: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for process in [me] + me.children(recursive=True):
                try:
                    info = process.memory_info()
                    title = " ".join(process.cmdline())[:80] or process.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                peak = self.peaks.setdefault(process.pid, {"title": title, "rss_mib": 0.0, "private_mib": 0.0})
                peak["rss_mib"] = max(peak["rss_mib"], info.rss / 2**20)
                # resident minus shared pages: what the process holds itself, not the object store it maps
                peak["private_mib"] = max(peak["private_mib"], (info.rss - getattr(info, "shared", 0)) / 2**20)
                if title.startswith("ray::") and title != "ray::IDLE":
                    peak["title"] = title  # a worker's title names the task or actor it last ran
            self._stop.wait(self.every_s)

    def by_role(self) -> dict[str, dict[str, float]]:
        """Per kind of process: how many, and the highest peak among them (MiB)."""
        roles: dict[str, dict[str, float]] = {}
        for pid, peak in self.peaks.items():
            role = "job (driver)" if pid == self._driver_pid else process_role(peak["title"])
            entry = roles.setdefault(role, {"processes": 0, "peak_rss_mib": 0.0, "peak_private_mib": 0.0})
            entry["processes"] += 1
            entry["peak_rss_mib"] = max(entry["peak_rss_mib"], round(peak["rss_mib"], 1))
            entry["peak_private_mib"] = max(entry["peak_private_mib"], round(peak["private_mib"], 1))
        return dict(sorted(roles.items(), key=lambda kv: -kv[1]["peak_private_mib"]))

    @property
    def _driver_pid(self) -> int:
        import os

        return os.getpid()


def distributed_worker(rows: int, workers: int) -> dict[str, Any]:
    """One distributed run on ``rows`` synthetic rows in Parquet shards (a local Ray with this
    machine's CPUs, ``workers`` Ray Train workers), with every process's peak memory."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import DistributedConfig, TrainingConfig
    from aprendiz.training.job import run_training

    with tempfile.TemporaryDirectory(dir=ROOT / "var") as root:
        store = ObjectStore(root)
        started = time.perf_counter()
        parquet_bytes = write_parquet_shards(store, "synthetic", rows)
        generated = time.perf_counter() - started
        config = TrainingConfig(distributed=DistributedConfig(workers=workers))
        with MemorySampler() as memory:
            started = time.perf_counter()
            result = run_training(ModelRegistry(store), "synthetic", config)
            wall = time.perf_counter() - started
    (candidate,) = result.candidates
    return {
        "rows": rows, "workers": workers, "wall_s": wall, "generate_s": generated, "parquet_mib": parquet_bytes / 2**20,
        "matrix_mib": rows * FEATURES * 4 / 2**20, "split": result.split,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "processes": memory.by_role(),
        "candidates": {candidate["name"]: {"fit_seconds": candidate["fit_seconds"], "error": candidate["error"],
                                           "roc_auc": (candidate["metrics"] or {}).get("roc_auc"),
                                           "worker_rows": candidate["worker_rows"]}},
        "best": result.best_candidate, "ray": "distributed",
    }


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


def measure(rows_list: list[int], repeats: int, log=print, without: tuple[str, ...] = (), *,
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each size ``repeats`` times, each run in a process of its own; ``extra``: the worker's
    further arguments (``--ray local``, ``--distributed 2``)."""
    out: dict[str, Any] = {}
    for rows in rows_list:
        runs = []
        for r in range(repeats):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                path = Path(f.name)
            argv = [PYTHON, "-m", "benchmarks.training", "--rows", str(rows), "--out", str(path), *extra]
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
            "processes": ok[-1].get("processes") if ok else None,
        }
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--without", action="append", default=[], help="leave this default candidate out")
    parser.add_argument("--ray", help="train the candidates as Ray tasks (local: a Ray started for the run)")
    parser.add_argument("--distributed", type=int, metavar="WORKERS",
                        help="Parquet shards through the distributed path, with this many Ray Train workers")
    args = parser.parse_args()
    if args.distributed:
        out = distributed_worker(args.rows, args.distributed)
    else:
        out = worker(args.rows, tuple(args.without), args.ray)
    args.out.write_text(json.dumps(out))
    sys.exit(0)
