"""Training beyond one machine: the dataset's Parquet shards read by Ray Data, one XGBoost
candidate trained data-parallel by Ray Train across workers, and evaluated where the rows are.

It runs when training.yaml sets ``distributed:`` (:class:`~aprendiz.training.config.DistributedConfig`).
Only labels and probabilities ever come back to the job's process; the feature rows stay in Ray's
object store, spread over the cluster's nodes. One run:

1. The schema: training.yaml's, else the kept ``schema.json``, else inferred from the first
   shard's first ``schema_sample_rows`` rows (a level that only later shards hold is an unseen
   level, handled as the feature says).
2. Ray Data reads every ``*.parquet`` shard under ``datasets/<name>/``; each block is validated
   and encoded into the model matrix by the same code as in one process
   (:func:`aprendiz.training.dataset.validate_rows`). An invalid row is counted and quarantined
   (the first ``QUARANTINE_KEPT`` are written with their reasons). Feedback rows join the pool.
3. The split: a row goes to train, validation or test by a seeded hash of its values, so the same
   row lands in the same split whatever the sharding, and a duplicate never crosses splits. It is
   stratified in expectation, not exactly. There is no deduplication across shards.
4. Ray Train's ``XGBoostTrainer``: each worker builds a ``QuantileDMatrix`` of its share of the
   training rows; XGBoost's collective sums their histograms, so the trees are those one fit on
   every row would grow. Rank 0's booster is the run's checkpoint, in the store under
   ``runs/<name>/<run id>/ray-train/``.
5. The threshold on validation (the booster's probabilities); the ONNX export; then one pass over
   the test rows computes the booster's, the export's and the champion's probabilities: the
   export must agree with the booster on EVERY test row, and the test metrics are the export's,
   on every test row, which is what would serve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np
import pandas as pd

from aprendiz.columns import width
from aprendiz.registry import OUTPUT, Feature, LoadedArtifact, dataset_prefix
from aprendiz.store import ObjectStore
from aprendiz.training.candidates import (
    CandidateResult,
    choose_threshold,
    class_weights,
    evaluate,
    onnx_latency_ms,
    xgboost_classifier,
)
from aprendiz.training.config import DistributedConfig, TrainingConfig, TrainingConfigError
from aprendiz.training.dataset import (
    MIN_PER_CLASS,
    PARQUET_SUFFIXES,
    DatasetError,
    Source,
    TextDatasetError,
    data_keys,
    feedback_rows,
    read_feedback_records,
    resolve_schema,
    validate_rows,
)
from aprendiz.training.onnx_export import check_export, export_onnx, model_feeds, run_in_chunks
from aprendiz.training.parallel import ray_session

log = logging.getLogger("aprendiz.training")

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALIDATION: "validation", TEST: "test"}
BATCH_ROWS = 65_536  # rows per Ray Data batch: encoding, scoring, collecting
QUARANTINE_KEPT = 10_000  # invalid rows written to the quarantine file (all are counted)
BOOSTER_FILE = "model.ubj"
SOURCE = "a Parquet shard"


@dataclass
class ShardedPool:
    """The rows of a distributed run (a :class:`~aprendiz.training.dataset.Pool`): counted, never
    gathered in one process."""

    features: list[Feature]
    sources: list[str]
    schema_source: str
    rows_read: int
    quarantine: list[dict[str, Any]]
    quarantined: int
    used: int
    from_feedback: int
    digest: int  # the sum of every valid row's hash, mod 2**64: order-free
    left_out: dict[str, str] = field(default_factory=dict)
    text_column: str | None = None
    duplicates_dropped: int = 0
    labels_corrected: int = 0

    @property
    def rows_quarantined(self) -> int:
        return self.quarantined

    @property
    def rows_used(self) -> int:
        return self.used

    @property
    def rows_from_feedback(self) -> int:
        return self.from_feedback

    def fingerprint(self, seed: int) -> str:
        names = [f.name for f in self.features]
        return hashlib.sha256(json.dumps([names, self.used, self.digest, seed]).encode()).hexdigest()


@dataclass
class Sharded:
    """What a distributed run trained: the pool, the split, the candidate, the champion's test probabilities."""

    pool: ShardedPool
    sizes: dict[str, int]
    y_test: np.ndarray
    candidate: CandidateResult
    champion_probabilities: np.ndarray | None = None
    champion_problem: str | None = None
    train_counts: tuple[int, int] = (0, 0)  # the training rows of each class


# -- the blocks ------------------------------------------------------------------------------


def row_hashes(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """uint64 per row, from its model-matrix values and label: the same row, the same hash."""
    if not len(y):
        return np.zeros(0, dtype=np.uint64)
    frame = pd.DataFrame(np.ascontiguousarray(x, dtype=np.float32))
    frame["y"] = y
    frame["seed"] = seed  # pandas hashes numbers without its hash_key: the seed is a column of the row
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def split_of(hashes: np.ndarray, test_fraction: float, validation_fraction: float) -> np.ndarray:
    """int8 per row: TEST below ``test_fraction`` of the hash's range, VALIDATION in the next
    ``validation_fraction``, else TRAIN."""
    share = (hashes >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.where(share < test_fraction, TEST,
                    np.where(share < test_fraction + validation_fraction, VALIDATION, TRAIN)).astype(np.int8)


def encode_block(frame: pd.DataFrame, *, features: list[Feature], label_column: str, labels, seed: int,
                 test_fraction: float, validation_fraction: float, source: str = SOURCE) -> dict[str, np.ndarray]:
    """One block of raw rows as columns: ``x`` (the model matrix), ``y`` (-1: invalid), ``split``,
    ``hash``, and ``quarantine`` (the invalid row with its reasons, as JSON; "" when valid)."""
    n = len(frame)
    x, y, bad = validate_rows(frame, np.zeros(n, dtype=np.int64), source, features, label_column, labels)
    hashes = row_hashes(x, y, seed)
    entries = [json.dumps({k: v for k, v in entry.items() if k != "line"}, sort_keys=True, default=str) for entry in bad]
    return {
        "x": np.concatenate([x, np.zeros((len(bad), x.shape[1]), dtype=np.float32)]),
        "y": np.concatenate([y, np.full(len(bad), -1, dtype=np.int64)]),
        "split": np.concatenate([split_of(hashes, test_fraction, validation_fraction), np.full(len(bad), -1, np.int8)]),
        "hash": np.concatenate([hashes, np.zeros(len(bad), dtype=np.uint64)]),
        "quarantine": np.asarray([""] * len(y) + entries, dtype=object),
    }


def _one_split(batch: dict[str, np.ndarray], part: int) -> dict[str, np.ndarray]:
    keep = batch["split"] == part
    return {"x": batch["x"][keep], "y": batch["y"][keep]}


# -- Ray Train's workers ---------------------------------------------------------------------


def booster_params(params: dict[str, Any], seed: int, threads: int) -> tuple[dict[str, Any], int]:
    """(XGBoost's native parameters, boosting rounds) of the candidate's scikit-learn-style params,
    with the same defaults as the in-process candidate."""
    model = xgboost_classifier(params, seed)
    native = {k: v for k, v in model.get_xgb_params().items() if v is not None}
    native.pop("n_jobs", None)
    native["seed"] = native.pop("random_state", seed)
    native["nthread"] = threads
    return native, int(model.n_estimators)


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its share of the training rows, the collective fit, rank 0's checkpoint."""
    import ray.train
    import xgboost
    from ray.train import Checkpoint

    xs, ys = [], []
    for batch in ray.train.get_dataset_shard("train").iter_batches(batch_size=BATCH_ROWS, batch_format="numpy"):
        xs.append(batch["x"])
        ys.append(batch["y"])
    x = np.concatenate(xs) if xs else np.zeros((0, config["width"]), dtype=np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    del xs, ys
    matrix = xgboost.QuantileDMatrix(x, label=y, missing=np.nan, nthread=config["params"]["nthread"])
    del x
    booster = xgboost.train(config["params"], matrix, num_boost_round=config["rounds"])
    from xgboost import collective

    shares = collective.allreduce(np.eye(collective.get_world_size())[collective.get_rank()] * len(y),
                                  collective.Op.SUM)
    context = ray.train.get_context()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if context.get_world_rank() == 0:
            booster.save_model(os.path.join(folder, BOOSTER_FILE))
            checkpoint = Checkpoint.from_directory(folder)
        ray.train.report({"rows_per_worker": [int(r) for r in shares]}, checkpoint=checkpoint)


# -- scoring where the rows are --------------------------------------------------------------


class _Scorer:
    """A Ray Data actor: the booster's positive-class probability of each row (``p_model``), and
    with an export the export's (``p_onnx``), and with a champion the champion's (``p_champion``;
    NaN and ``champion_error`` when it cannot run)."""

    def __init__(self, booster: bytes, features: list[Feature], onnx_bytes: bytes | None = None,
                 champion: tuple[bytes, list[Feature], str, str] | None = None):
        import onnxruntime as ort
        import xgboost

        self.booster = xgboost.Booster()
        self.booster.load_model(bytearray(booster))
        self.booster.set_param({"nthread": 1})
        self.features = features
        cpu = ["CPUExecutionProvider"]
        self.export = ort.InferenceSession(onnx_bytes, providers=cpu) if onnx_bytes else None
        self.champion = None
        self.champion_error = ""
        if champion is not None:
            try:
                session = ort.InferenceSession(champion[0], providers=cpu)
                self.champion = (session, champion[1], champion[2], champion[3])
            except Exception as exc:
                self.champion_error = f"{type(exc).__name__}: {exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = batch["x"]
        out = {"y": batch["y"], "p_model": self.booster.inplace_predict(x, missing=np.nan).astype(np.float64)}
        if self.export is not None:
            out["p_onnx"] = run_in_chunks(self.export, OUTPUT, model_feeds(x, self.features))[:, 1].astype(np.float64)
        if self.champion is not None or self.champion_error:
            out["p_champion"], error = np.full(len(x), np.nan), self.champion_error
            if self.champion is not None:
                session, features, input_name, output_name = self.champion
                try:
                    out["p_champion"] = run_in_chunks(session, output_name, model_feeds(x, features, input_name))[:, 1]
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
            out["champion_error"] = np.asarray([error] * len(x), dtype=object)
        return out


def _collect(dataset, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of every row of ``dataset`` (small ones: labels and probabilities) in this process."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in dataset.iter_batches(batch_size=BATCH_ROWS, batch_format="numpy"):
        for c in columns:
            parts[c].append(batch[c])
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


# -- the run ---------------------------------------------------------------------------------


def parquet_keys(store: ObjectStore, name: str) -> list[str]:
    """The Parquet shards of ``datasets/<name>/``; DatasetError when there are none, or other data files."""
    keys, _ = data_keys(store, name)
    shards = [k for k in keys if k.lower().endswith(PARQUET_SUFFIXES)]
    others = [k for k in keys if k not in shards]
    if others:
        raise DatasetError(f"distributed training reads Parquet shards only; {len(others)} other data file(s) under "
                           f"{dataset_prefix(name)} ({others[0]}, ...) would be left out: convert them to Parquet")
    if not shards:
        raise DatasetError(f"no Parquet shards under {dataset_prefix(name)}: distributed training reads *.parquet "
                           "(aprendiz datasets push FILE.parquet --model NAME)")
    return shards


def _sample(store: ObjectStore, key: str, rows: int) -> Source:
    """The first ``rows`` rows of one shard, read without reading the rest of it."""
    import pyarrow.parquet as pq

    fs, path = store.arrow(key)
    with fs.open_input_file(path) as handle:
        batch = next(pq.ParquetFile(handle).iter_batches(batch_size=rows), None)
        frame = batch.to_pandas() if batch is not None else pd.DataFrame()
    return Source(key, frame, np.arange(1, len(frame) + 1, dtype=np.int64), [])


def _check_counts(counts: np.ndarray, config: TrainingConfig, quarantined: int) -> None:
    """``counts[split, label]``: DatasetError unless there are enough rows of both classes in every split."""
    total = counts.sum(axis=0)
    n = int(total.sum())
    if n < config.min_rows:
        raise DatasetError(f"only {n} valid rows (after {quarantined} rows quarantined): at least "
                           f"min_rows={config.min_rows} are needed")
    if total.min() < MIN_PER_CLASS:
        raise DatasetError(f"only {int(total.min())} rows of class {int(np.argmin(total))}: at least "
                           f"{MIN_PER_CLASS} per class are needed")
    for part, row in enumerate(counts):
        if row.min() == 0:
            raise DatasetError(f"the {SPLIT_NAMES[part]} split has a single class: add rows of the rarer class")


def check_capacity(distributed: DistributedConfig, *, cluster_cpus: float, fixed_size: bool) -> None:
    """Ray Train waits for its workers' CPUs to appear: on a Ray that cannot grow (``fixed_size``:
    the local one this run started) more than it holds would wait for ever, so it is refused."""
    needed = distributed.workers * distributed.cpus_per_worker
    if needed <= cluster_cpus:
        return
    message = (f"distributed.workers × cpus_per_worker = {distributed.workers} × {distributed.cpus_per_worker} = "
               f"{needed:g} CPUs, but the Ray holds {cluster_cpus:g}")
    if fixed_size:
        raise TrainingConfigError(f"{message}: lower distributed.workers or distributed.cpus_per_worker, or run on "
                                  "a cluster (--ray auto or --ray host:6379)")
    log.warning("%s: Ray Train waits until the cluster scales up to them", message)


def train_sharded(
    store: ObjectStore, name: str, run_id: str, config: TrainingConfig, labels, *,
    kept_schema: list[Feature] | None, address: str,
    align: Callable[[list[Feature], bool], list[Feature]],
    champion: LoadedArtifact | None = None,
) -> Sharded:
    """Steps 1 to 5 of the module docstring, on the Ray at ``address`` (see
    :func:`aprendiz.training.parallel.ray_session`). ``align(features, inferred)`` checks (and
    orders) the schema against the champion's."""
    import ray

    assert config.distributed is not None
    with ray_session(address) as started_here:
        check_capacity(config.distributed, cluster_cpus=float(ray.cluster_resources().get("CPU", 0)),
                       fixed_size=started_here and address == "local")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.enable_operator_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per dataset and operator otherwise
        keys = parquet_keys(store, name)
        left_out: dict[str, str] = {}
        sample = _sample(store, keys[0], config.distributed.schema_sample_rows)
        try:
            features, schema_source = resolve_schema(name, [sample], config, kept_schema, left_out)
        except TextDatasetError as exc:
            raise DatasetError(f"distributed training takes tabular data; column {exc.column!r} is text") from None
        features = align(features, schema_source == "inferred")
        encode = {"features": features, "label_column": config.label_column, "labels": labels, "seed": config.seed,
                  "test_fraction": config.test_fraction, "validation_fraction": config.validation_fraction}
        fs, _ = store.arrow()
        encoder: Any = partial(encode_block, **encode)
        pool = ray.data.read_parquet([store.arrow(k)[1] for k in keys], filesystem=fs).map_batches(
            encoder, batch_format="pandas", batch_size=BATCH_ROWS)
        feedback, feedback_bad = read_feedback_records(store, name)
        quarantine = list(feedback_bad)
        feedback_frame = pd.DataFrame.from_records(feedback_rows(feedback, config.label_column, quarantine))
        from_feedback = 0
        if len(feedback_frame):
            block = encode_block(feedback_frame.astype(object), source="feedback", **encode)
            from_feedback = int(np.sum(block["y"] >= 0))
            pool = pool.union(ray.data.from_items([dict(zip(block, row)) for row in zip(*block.values())]))
        pool = pool.materialize()
        sharded = _count(pool, features, keys, schema_source, left_out, quarantine, from_feedback, config)
        log.info("%s: %d rows in %d Parquet shard(s) (%d quarantined), split %s", name, sharded.pool.rows_read,
                 len(keys), sharded.pool.rows_quarantined, sharded.sizes)
        _train_and_evaluate(sharded, pool, store, name, run_id, config, champion)
    return sharded


def _count(pool, features, keys, schema_source, left_out, quarantine, from_feedback, config) -> Sharded:
    """One pass over the labels: the split's sizes per class, the fingerprint, the quarantine."""
    counts = np.zeros((3, 2), dtype=np.int64)
    digest, rows, quarantined = 0, 0, len(quarantine)
    unparsed = quarantined  # feedback records that never became rows (not JSON, not tabular)
    for batch in pool.select_columns(["y", "split", "hash", "quarantine"]).iter_batches(
            batch_size=BATCH_ROWS, batch_format="numpy"):
        valid = batch["y"] >= 0
        rows += len(valid)
        np.add.at(counts, (batch["split"][valid], batch["y"][valid]), 1)
        digest = (digest + int(np.sum(batch["hash"][valid], dtype=np.uint64))) % 2**64
        for entry in batch["quarantine"][~valid]:
            quarantined += 1
            if len(quarantine) < QUARANTINE_KEPT:
                quarantine.append(json.loads(entry))
    _check_counts(counts, config, quarantined)
    sharded_pool = ShardedPool(features=features, sources=keys, schema_source=schema_source,
                               rows_read=rows + unparsed,
                               quarantine=quarantine, quarantined=quarantined, used=int(counts.sum()),
                               from_feedback=from_feedback, digest=digest, left_out=left_out)
    sizes = {SPLIT_NAMES[p]: int(counts[p].sum()) for p in (TRAIN, VALIDATION, TEST)}
    candidate = CandidateResult(name="", algorithm="xgboost")
    candidate.train_rows = candidate.train_rows_available = sizes["train"]
    return Sharded(sharded_pool, sizes, np.zeros(0, dtype=np.int64), candidate,
                   train_counts=(int(counts[TRAIN, 0]), int(counts[TRAIN, 1])))


def _train_and_evaluate(sharded: Sharded, pool, store: ObjectStore, name: str, run_id: str, config: TrainingConfig,
                        champion: LoadedArtifact | None) -> None:
    """Ray Train's fit, the threshold, the export and the test pass; fills in ``sharded``. A failure
    of the candidate is its error (as in one process), not the run's."""
    import ray
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    distributed = config.distributed
    assert distributed is not None
    candidate, features = sharded.candidate, sharded.pool.features
    candidate.name = distributed.candidate.name
    negatives, positives = sharded.train_counts
    params = {**distributed.candidate.params,
              **class_weights("xgboost", distributed.candidate.params, negatives, positives)}
    candidate.params = params
    started = time.perf_counter()
    try:
        train = pool.map_batches(_one_split, fn_kwargs={"part": TRAIN}, batch_format="numpy").materialize()
        native, rounds = booster_params(params, config.seed, max(1, int(distributed.cpus_per_worker)))
        fs, folder = store.arrow(f"runs/{name}/{run_id}/ray-train")
        trainer = XGBoostTrainer(
            _train_loop,
            train_loop_config={"params": native, "rounds": rounds, "width": width(features)},
            scaling_config=ray.train.ScalingConfig(num_workers=distributed.workers,
                                                   resources_per_worker={"CPU": distributed.cpus_per_worker}),
            run_config=ray.train.RunConfig(name="xgboost", storage_path=folder, storage_filesystem=fs),
            datasets={"train": train},
        )
        fitted = trainer.fit()
        del train
        if fitted.checkpoint is None:
            raise RuntimeError("Ray Train's workers reported no checkpoint")
        with fitted.checkpoint.as_directory() as where:
            with open(os.path.join(where, BOOSTER_FILE), "rb") as f:
                booster = f.read()
        candidate.worker_rows = list((fitted.metrics or {}).get("rows_per_worker", []))
        candidate.fit_seconds = time.perf_counter() - started
        scorers = {"fn_constructor_kwargs": {"booster": booster, "features": features},
                   "compute": ray.data.ActorPoolStrategy(min_size=1, max_size=distributed.workers), "num_cpus": 1,
                   "batch_format": "numpy", "batch_size": BATCH_ROWS}
        validation = _collect(pool.map_batches(_one_split, fn_kwargs={"part": VALIDATION}, batch_format="numpy")
                              .map_batches(_Scorer, **scorers), ["y", "p_model"])
        threshold, rule, met = choose_threshold(validation["y"], validation["p_model"], config.min_precision)
        val_metrics, _ = evaluate(validation["y"], validation["p_model"], threshold, target_met=met)
        candidate.validation_score = float(val_metrics[config.selection_metric])
        candidate.threshold, candidate.threshold_rule = threshold, rule

        from sklearn.pipeline import Pipeline

        model = xgboost_classifier(params, config.seed)
        model.load_model(bytearray(booster))
        onnx_bytes = export_onnx(Pipeline([("model", model)]), features)
        scorers["fn_constructor_kwargs"] = {
            "booster": booster, "features": features, "onnx_bytes": onnx_bytes,
            "champion": (champion.onnx_bytes, champion.card.features, champion.card.onnx_input,
                         champion.card.onnx_output) if champion is not None else None}
        columns = ["y", "p_model", "p_onnx"] + (["p_champion", "champion_error"] if champion is not None else [])
        test_rows = pool.map_batches(_one_split, fn_kwargs={"part": TEST}, batch_format="numpy")
        test = _collect(test_rows.map_batches(_Scorer, **scorers), columns)
        sharded.y_test = test["y"].astype(np.int64)
        pair = lambda p: np.column_stack([1.0 - p, p])  # noqa: E731
        candidate.onnx_max_diff = check_export(pair(test["p_onnx"]), pair(test["p_model"]), config.onnx_tolerance)
        candidate.onnx_bytes, candidate.test_probabilities = onnx_bytes, test["p_onnx"]
        candidate.test_metrics, candidate.confusion = evaluate(sharded.y_test, test["p_onnx"], threshold, target_met=met)
        latency_rows = test_rows.take_batch(200, batch_format="numpy")["x"]
        candidate.test_metrics["latency_ms"] = onnx_latency_ms(onnx_bytes, latency_rows, features)
        candidate.test_metrics["size_bytes"] = float(len(onnx_bytes))
        candidate.metrics_note = (
            f"trained by {distributed.workers} Ray Train workers (XGBoost's collective) on "
            f"{' + '.join(f'{r:,}' for r in candidate.worker_rows)} rows from Parquet shards; the export agrees with "
            "the booster and the test metrics are onnxruntime's, on every test row")
        if champion is not None:
            errors = [e for e in test["champion_error"] if e]
            if errors:
                sharded.champion_problem = errors[0]
            else:
                sharded.champion_probabilities = test["p_champion"].astype(np.float64)
    except Exception as exc:
        candidate.error = f"{type(exc).__name__}: {exc}"
        candidate.fit_seconds = candidate.fit_seconds or time.perf_counter() - started
        log.exception("%s: the distributed candidate failed", name)
