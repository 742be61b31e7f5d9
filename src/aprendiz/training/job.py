"""``aprendiz train``: train, evaluate and maybe promote one tabular, text or image model from the store.

An image dataset (PNG or JPEG files, a folder per label or a labels.csv, see
:mod:`aprendiz.training.images`) goes the same way with the networks of
:mod:`aprendiz.training.image_candidates` (by default the small CNN and the MLP on pixels); its card
records the transform (training.yaml's ``image``) that serving applies to a client's images.

A text dataset (one text column and the label, see :mod:`aprendiz.training.dataset`) goes the
same way with the text candidates of :mod:`aprendiz.training.text_candidates` (by default when
training.yaml lists no candidates: MiniLM embeddings + logistic regression, and TF-IDF + logistic
regression); its version stores tokenizer.json beside model.onnx.

One run (its id is a fresh registry version, e.g. "20261126T142501Z-3f9a"):

1. read ``datasets/<name>/training.yaml`` (else defaults), the champion, the kept schema;
2. read + validate the dataset and the feedback (see :mod:`aprendiz.training.dataset`);
   too few rows or a single class stops here, and nothing in the store has changed;
3. split stratified (seed recorded on the card), train every candidate, pick a threshold on
   validation, export to ONNX and check it, evaluate on test (:mod:`aprendiz.training.candidates`);
4. pick the best candidate by its TEST selection metric among those that meet the floors
   on test (ties: better validation score, then smaller artifact); evaluate the champion on the same test rows (onnxruntime, its own card
   threshold); promote when there is no champion, or when the best beats the champion's
   test metric by at least ``margin``;
5. write the quarantine file and (first run) the inferred schema; publish the version
   (model.onnx, report/*, card.json) and replace champion.json, if the champion read in step 1
   still serves (:meth:`ModelRegistry.promote_over`: of two concurrent runs, exactly one promotes;
   the other keeps its version unpromoted and its reason names the winner); a run that does not
   promote publishes nothing under models/ and leaves its report under ``runs/<name>/<run id>/``.
   Every run writes ``runs/<name>/<run id>/result.json``.

Biases, both known: picking the best of several candidates on the test set flatters the
challenger a little (the margin is there to absorb that; validation scores saturate on small
data, so they only break ties); and the champion may have been trained on some of today's
test rows (another split, or data since deduplicated), which flatters the champion.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from aprendiz.columns import spans
from aprendiz.registry import (
    IMAGE_INPUT,
    INPUT_IDS,
    OUTPUT,
    TABULAR_INPUT,
    TOKENIZER_FILE,
    Champion,
    Feature,
    KeyNotFoundError,
    ModelCard,
    ModelRegistry,
    PromotionConflictError,
    VersionNotFoundError,
    new_version,
)
from aprendiz.store import jsonable
from aprendiz.training.candidates import (
    IMPUTED,
    MISSING_HANDLING,
    CandidateResult,
    evaluate,
    label_warnings,
    meets_floors,
    score,
)
from aprendiz.training.config import TrainingConfig, TrainingConfigError, load_schema, run_labels, save_schema
from aprendiz.training.dataset import (
    Dataset,
    DatasetError,
    Pool,
    check_trainable,
    load_dataset,
    quarantine_bytes,
    split_dataset,
)
from aprendiz.training.onnx_export import onnx_probabilities
from aprendiz.training.parallel import CandidateRunner, LocalRunner
from aprendiz.training.report import unlabelled_effect

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run failed; the message says why. The champion is untouched."""


class StoreUnavailableError(TrainingError):
    """The object store could not be read or written."""


@dataclass
class TrainingResult:
    name: str
    run_id: str
    promoted: bool
    reason: str
    version: str | None  # the published (and promoted) version, None when nothing was promoted
    champion_before: str | None
    best_candidate: str | None
    selection_metric: str
    best_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    candidates: list[dict[str, Any]]
    rows_read: int
    rows_quarantined: int
    rows_used: int
    duplicates_dropped: int
    labels_corrected: int
    quarantine_key: str | None
    split: dict[str, int]
    seed: int
    duration_s: float
    report_keys: dict[str, str] = field(default_factory=dict)  # file name -> store key
    report_url: str | None = None  # where report.html is (folder path or s3:// URL)
    schema_source: str = ""
    left_out: dict[str, str] = field(default_factory=dict)  # columns the inferred schema left out, and why
    unlabelled_effect: str | None = None  # image datasets: the semi-supervised GAN with and without the unlabelled images

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _store_call(store, what: str, fn, *args, **kwargs):
    """Run a store operation; anything but our own errors becomes StoreUnavailableError."""
    try:
        return fn(*args, **kwargs)
    except (TrainingError, DatasetError, TrainingConfigError, KeyNotFoundError, VersionNotFoundError,
            PromotionConflictError):
        raise
    except Exception as exc:  # s3fs / botocore / OS errors: the store is not usable
        raise StoreUnavailableError(f"the object store {store!r} is unreachable or failing ({what}): {type(exc).__name__}: {exc}") from exc


def _candidate_row(c: CandidateResult) -> dict[str, Any]:
    return {
        "name": c.name, "algorithm": c.algorithm, "params": c.params, "search": c.search,
        "validation_score": c.validation_score, "threshold": c.threshold, "threshold_rule": c.threshold_rule,
        "metrics": c.test_metrics, "confusion": c.confusion, "onnx_max_diff": c.onnx_max_diff,
        "fit_seconds": c.fit_seconds, "train_rows": c.train_rows, "note": c.note, "error": c.error,
        "worker_rows": c.worker_rows,
    }


def _align_with_champion(features: list[Feature], champion_card: ModelCard | None, inferred: bool) -> list[Feature]:
    """A freshly inferred schema takes the champion's feature order; any schema must match the champion's names."""
    if champion_card is None:
        return features
    if champion_card.kind != "tabular":
        raise TrainingError(f"the champion of {champion_card.name!r} is a {champion_card.kind} model; this job trains tabular models")
    wanted = [f.name for f in champion_card.features]
    by_name = {f.name: f for f in features}
    if inferred and set(wanted) <= set(by_name):
        return [by_name[n] for n in wanted]
    if [f.name for f in features] != wanted:
        raise TrainingError(
            f"the dataset's features {[f.name for f in features][:5]}... differ from the champion's "
            f"{wanted[:5]}...: serving cannot swap to another schema (train it under a new model name)"
        )
    retyped = [f"{f.name} ({c.type} -> {f.type})" for f, c in zip(features, champion_card.features)
               if (f.type == "category") != (c.type == "category")]
    if retyped:
        raise TrainingError(f"features change between number and category against the champion: {retyped[:5]}; "
                            "serving cannot swap to another schema (train it under a new model name)")
    return features


def _check_text_champion(text_column: str, champion_card: ModelCard | None) -> None:
    """A text dataset may only challenge a text champion that reads the same request field."""
    if champion_card is None:
        return
    if champion_card.kind != "text":
        raise TrainingError(f"the champion of {champion_card.name!r} is a {champion_card.kind} model; the dataset is text")
    if champion_card.text_field != text_column:
        raise TrainingError(
            f"the dataset's text column {text_column!r} differs from the champion's text_field "
            f"{champion_card.text_field!r}: serving cannot swap (train it under a new model name)"
        )


def _check_champion_kind(kind: str, champion_card: ModelCard | None) -> None:
    """A dataset may only challenge a champion of its own kind: serving cannot swap to other inputs."""
    if champion_card is not None and champion_card.kind != kind:
        raise TrainingError(f"the champion of {champion_card.name!r} is a {champion_card.kind} model; the dataset is "
                            f"{kind}: serving cannot swap (train it under a new model name)")


def _evaluate_champion(registry: ModelRegistry, name: str, version: str, split, config: TrainingConfig,
                       features: list[Feature]):
    """(card, metrics, test probabilities, None) of the champion on the test rows, or (card, None, None, reason)."""
    artifact = _store_call(registry.store, "loading the champion", registry.load, name, version)
    card = artifact.card
    try:
        if card.kind == "image":
            from aprendiz.images import to_pixels
            from aprendiz.training.image_candidates import onnx_image_probabilities

            assert card.image is not None
            pixels = to_pixels(list(split.x_test), card.image, config_limits(), what="test")  # its own transform
            positive = onnx_image_probabilities(artifact.onnx_bytes, pixels, card.onnx_input, card.onnx_output)[:, 1]
        elif card.kind == "text":
            from aprendiz.training.text_candidates import text_onnx_probabilities

            texts = [str(t) for t in split.x_test]
            positive = text_onnx_probabilities(artifact.onnx_bytes, artifact.files[TOKENIZER_FILE], texts)[:, 1]
        else:
            positive = onnx_probabilities(
                artifact.onnx_bytes, split.x_test, features, input_name=card.onnx_input, output_name=card.onnx_output
            )[:, 1]
        metrics, probabilities = champion_metrics(card, len(artifact.onnx_bytes), split.y_test, positive)
        return card, metrics, probabilities, None
    except Exception as exc:  # a champion that cannot run is no bar to clear
        return card, None, None, f"{type(exc).__name__}: {exc}"


def config_limits():
    """The image limits the job decodes with: serving's defaults (an image serving would refuse is quarantined)."""
    from aprendiz.images import ImageLimits

    return ImageLimits()


def champion_metrics(card: ModelCard, size_bytes: int, y_test: np.ndarray, positive: np.ndarray):
    """The champion's test metrics at its own card threshold, and its positive-class probabilities (float64)."""
    positive = np.asarray(positive, dtype=np.float64)
    metrics, _ = evaluate(y_test, positive, card.threshold)
    metrics["size_bytes"] = float(size_bytes)
    return metrics, positive


def _progress(items: list, name: str):
    """A progress bar on a terminal; plain log lines (written by the caller) otherwise."""
    import sys

    from tqdm import tqdm

    return tqdm(items, desc=f"{name}: candidates", unit="candidate", disable=not sys.stderr.isatty(), leave=False)


def run_training(
    registry: ModelRegistry,
    name: str,
    config: TrainingConfig | None = None,
    *,
    now: datetime | None = None,
    pushgateway: str | None = None,
    runner: CandidateRunner | None = None,
) -> TrainingResult:
    """One training run of model ``name``; see the module docstring. ``runner``: where the tabular
    candidates are fit (default: this process; ``RayRunner``: Ray tasks). Raises TrainingError /
    DatasetError on failure."""
    from aprendiz.metrics import TrainingMetrics

    started = time.perf_counter()
    metrics = TrainingMetrics(name) if pushgateway else None
    result = None
    try:
        result = _run(registry, name, config, now=now, started=started, runner=runner)
        return result
    finally:
        if metrics is not None and pushgateway is not None:
            metrics.record(
                duration_s=time.perf_counter() - started,
                success=result is not None,
                rows_read=result.rows_read if result else 0,
                rows_quarantined=result.rows_quarantined if result else 0,
                candidates_trained=sum(1 for c in result.candidates if not c["error"]) if result else 0,
                metric=result.selection_metric if result else None,
                best_metric=result.best_metrics.get(result.selection_metric) if result and result.best_metrics else None,
                promoted=bool(result and result.promoted),
            )
            try:
                metrics.push(pushgateway)
            except Exception as exc:  # metrics are not worth failing a run for
                log.warning("could not push metrics to %s: %s", pushgateway, exc)


@dataclass
class Trained:
    """What training produced, in this process or across Ray Train workers, for the run to conclude on."""

    pool: Pool  # the rows: where from, how many, what was quarantined
    sizes: dict[str, int]  # the split's sizes
    y_test: np.ndarray
    candidates: list[CandidateResult]
    champion_card: ModelCard | None = None
    champion_metrics: dict[str, float] | None = None
    champion_probabilities: np.ndarray | None = None
    champion_problem: str | None = None  # why the champion could not be evaluated


def _run(registry: ModelRegistry, name: str, config: TrainingConfig | None, *, now, started: float,
         runner: CandidateRunner | None = None) -> TrainingResult:
    store = registry.store
    run_id = new_version(now)
    if config is None:
        config = _store_call(store, "reading training.yaml", TrainingConfig.load, store, name)
    champion = _store_call(store, "reading champion.json", registry.champion, name)
    champion_card = _store_call(store, "reading the champion's card", registry.card, name, champion.version) if champion else None
    labels = run_labels(config, champion_card)
    if config.distributed is not None:
        trained = _train_distributed(registry, name, run_id, config, champion, champion_card, labels, runner)
    else:
        trained = _train_in_process(registry, name, config, champion, champion_card, labels, runner)
    return _conclude(registry, name, run_id, config, labels, champion, trained, now=now, started=started)


def _train_in_process(registry: ModelRegistry, name: str, config: TrainingConfig, champion: Champion | None,
                      champion_card: ModelCard | None, labels, runner: CandidateRunner | None) -> Trained:
    """Read the whole pool here, split it, train every candidate (here or as Ray tasks), evaluate the champion."""
    dataset = _read_dataset(registry, name, config, champion_card, labels)
    split = split_dataset(dataset, config)
    log.info("%s: %d rows (%d quarantined), split %s", name, len(dataset.y), dataset.rows_quarantined, split.sizes())
    for warning in label_warnings(split.y_test):
        log.warning("%s: %s", name, warning)
    trained = Trained(dataset, split.sizes(), split.y_test,
                      _train_candidates(name, dataset, split, config, runner, registry.store))
    if champion is not None:
        (trained.champion_card, trained.champion_metrics, trained.champion_probabilities,
         trained.champion_problem) = _evaluate_champion(registry, name, champion.version, split, config, dataset.features)
    return trained


def _train_distributed(registry: ModelRegistry, name: str, run_id: str, config: TrainingConfig,
                       champion: Champion | None, champion_card: ModelCard | None, labels,
                       runner: CandidateRunner | None) -> Trained:
    """The pool stays in Ray Data's shards; one XGBoost candidate trains across Ray Train workers."""
    from aprendiz.training.distributed import train_sharded
    from aprendiz.training.parallel import RayRunner

    store = registry.store
    kept_schema = _store_call(store, "reading schema.json", load_schema, store, name)
    artifact = _store_call(store, "loading the champion", registry.load, name, champion.version) if champion else None
    address = runner.address if isinstance(runner, RayRunner) else "local"
    sharded = train_sharded(
        store, name, run_id, config, labels, kept_schema=kept_schema, address=address,
        align=lambda features, inferred: _align_with_champion(features, champion_card, inferred),
        champion=artifact,
    )
    for warning in label_warnings(sharded.y_test):
        log.warning("%s: %s", name, warning)
    trained = Trained(sharded.pool, sharded.sizes, sharded.y_test, [sharded.candidate])
    if artifact is not None:
        trained.champion_card = artifact.card
        if sharded.champion_probabilities is None:
            trained.champion_problem = sharded.champion_problem
        else:
            trained.champion_metrics, trained.champion_probabilities = champion_metrics(
                artifact.card, len(artifact.onnx_bytes), sharded.y_test, sharded.champion_probabilities)
    return trained


def _conclude(registry: ModelRegistry, name: str, run_id: str, config: TrainingConfig, labels,
              champion: Champion | None, trained: Trained, *, now, started: float) -> TrainingResult:
    """Rank the candidates, decide against the champion, and write what the run leaves in the store."""
    store, pool = registry.store, trained.pool
    best, eligible, ok = _rank(trained.candidates, config)
    promoted, reason = _decide(best, eligible, ok, config, champion, trained.champion_metrics, trained.champion_problem)

    # From here on the store changes (the data checks have passed).
    quarantine_key = None
    if pool.quarantine:
        quarantine_key = f"datasets/{name}/quarantine/{run_id}.jsonl"
        _store_call(store, "writing the quarantine file", store.write_bytes, quarantine_key, quarantine_bytes(pool.quarantine))
    if pool.schema_source == "inferred":
        _store_call(store, "writing schema.json", save_schema, store, name, pool.features, config.label_column)

    result = TrainingResult(
        name=name, run_id=run_id, promoted=promoted, reason=reason, version=None,
        champion_before=champion.version if champion else None, best_candidate=best.name,
        selection_metric=config.selection_metric, best_metrics=dict(best.test_metrics),
        champion_metrics=trained.champion_metrics, candidates=[_candidate_row(c) for c in trained.candidates],
        rows_read=pool.rows_read, rows_quarantined=pool.rows_quarantined, rows_used=pool.rows_used,
        duplicates_dropped=pool.duplicates_dropped, labels_corrected=pool.labels_corrected,
        quarantine_key=quarantine_key, split=dict(trained.sizes), seed=config.seed,
        duration_s=time.perf_counter() - started, schema_source=pool.schema_source, left_out=dict(pool.left_out),
        unlabelled_effect=unlabelled_effect(trained.candidates, config.selection_metric),
    )
    champion_info = None
    if champion is not None:
        card = trained.champion_card
        champion_info = {"version": champion.version, "metrics": trained.champion_metrics,
                         "probabilities": trained.champion_probabilities,
                         "algorithm": card.algorithm if card else "", "threshold": card.threshold if card else float("nan")}
    _publish(registry, result, trained.candidates, best, pool, trained.y_test, config, labels, champion, champion_info,
             now=now)
    result.duration_s = time.perf_counter() - started
    _store_call(store, "writing result.json", store.write_json, f"runs/{name}/{run_id}/result.json", jsonable(result.summary()))
    return result


def _read_dataset(registry: ModelRegistry, name: str, config: TrainingConfig, champion_card: ModelCard | None,
                  labels: tuple[str, str]) -> Dataset:
    """The dataset and feedback, in the champion's column order, checked trainable."""
    store = registry.store
    from aprendiz.training.images import is_image_dataset, load_image_dataset

    if _store_call(store, "listing the dataset", is_image_dataset, store, name):
        _check_champion_kind("image", champion_card)
        images: Dataset = _store_call(store, "reading the images and feedback", load_image_dataset, store, name,
                                      config.image, labels, config.label_column, config_limits())
        check_trainable(images, config)
        return images
    kept_schema = _store_call(store, "reading schema.json", load_schema, store, name)
    dataset: Dataset = _store_call(
        store, "reading the dataset and feedback", load_dataset, store, name, config, kept_schema=kept_schema, labels=labels
    )
    if dataset.text_column is not None:
        _check_text_champion(dataset.text_column, champion_card)
        aligned = dataset.features
    else:
        aligned = _align_with_champion(dataset.features, champion_card, dataset.schema_source == "inferred")
    if aligned != dataset.features:  # an inferred schema takes the champion's column order
        where = dict(zip([f.name for f in dataset.features], spans(dataset.features)))
        index = [j for f in aligned for j in range(*where[f.name])]
        dataset.x, dataset.features = np.ascontiguousarray(dataset.x[:, index]), aligned
    check_trainable(dataset, config)
    return dataset


def _train_candidates(name: str, dataset: Dataset, split, config: TrainingConfig,
                      runner: CandidateRunner | None, store=None) -> list[CandidateResult]:
    """Every candidate of the dataset's kind; ``store``: where an image candidate's ``weights`` param
    (a store key, ImageNet weights to fine-tune from) is read."""
    if dataset.image is not None:
        from aprendiz.training.config import IMAGE_ALGORITHMS
        from aprendiz.training.image_candidates import default_image_candidates, train_image_candidates

        configs = config.candidates if "candidates" in config.model_fields_set else default_image_candidates()
        wrong = [c.name for c in configs if c.algorithm not in IMAGE_ALGORITHMS]
        if wrong:
            raise TrainingError(f"candidates {wrong} do not train on images; the image algorithms are {list(IMAGE_ALGORITHMS)}")
        weights = {key: _store_call(store, f"reading the weights {key}", store.read_bytes, key)
                   for key in {c.params["weights"] for c in configs if isinstance(c.params.get("weights"), str)}}
        candidates = train_image_candidates(configs, split, config, unlabelled=dataset.unlabelled, weights=weights)
    elif dataset.text_column is not None:
        from aprendiz.training.text_candidates import default_text_candidates, train_text_candidates

        configs = config.candidates if "candidates" in config.model_fields_set else default_text_candidates()
        candidates = train_text_candidates(configs, split, config)
    else:
        runner = runner or LocalRunner(lambda items: _progress(items, name))
        candidates = runner.train(config.candidates, split, config, dataset.features)
    for candidate in candidates:
        log.info("%s: candidate %s %s", name, candidate.name, "trained" if candidate.ok else f"failed: {candidate.error}")
    return candidates


def _rank(candidates: list[CandidateResult], config: TrainingConfig):
    """(best, those that meet the floors, those that trained)."""
    ok = [c for c in candidates if c.ok]
    if not ok:
        raise TrainingError("no candidate could be trained: " + "; ".join(f"{c.name}: {c.error}" for c in candidates))
    metric = config.selection_metric
    eligible = [c for c in ok if not meets_floors(c.test_metrics, config.floors)]
    # Best test metric; ties go to the better validation score, then to the smaller artifact.
    ranked = sorted(
        eligible or ok,
        key=lambda c: (score(c.test_metrics, metric), score({metric: c.validation_score}, metric), -len(c.onnx_bytes or b"")),
        reverse=True,
    )
    return ranked[0], eligible, ok


def _decide(best, eligible, ok, config: TrainingConfig, champion, champion_metrics, champion_problem) -> tuple[bool, str]:
    """Whether the best candidate replaces the champion, and why (the floors, then the margin)."""
    metric = config.selection_metric
    if not eligible:
        return False, "no candidate meets the floors: " + "; ".join(
            f"{c.name} ({', '.join(meets_floors(c.test_metrics, config.floors))})" for c in ok
        )
    if champion is None:
        return True, f"first model: {best.name} ({metric} {best.test_metrics[metric]:.4f} on test)"
    if champion_metrics is None:
        return True, f"champion {champion.version} could not be evaluated ({champion_problem}); {best.name} meets the floors"
    delta = score(best.test_metrics, metric) - score(champion_metrics, metric)
    comparison = (
        f"{best.name} {metric} {best.test_metrics[metric]:.4f} vs champion {champion.version} "
        f"{champion_metrics[metric]:.4f} on the same test rows (delta {delta:+.4f}, margin {config.margin})"
    )
    promoted = delta >= config.margin and delta > 0
    return promoted, ("beats the champion: " if promoted else "does not beat the champion by the margin: ") + comparison


def _publish(registry: ModelRegistry, result: TrainingResult, candidates: list[CandidateResult], best: CandidateResult,
             dataset: Pool, y_test: np.ndarray, config: TrainingConfig, labels, champion: Champion | None,
             champion_info, *, now) -> None:
    """The report, and when promoted the new version and champion.json; fills in the result's keys.

    The promotion is conditional on ``champion`` still serving: a run that another run beat to it
    keeps its version unpromoted and says so (result.promoted False, the reason names the winner)."""
    from aprendiz.training.report import build_report

    store, name, run_id = registry.store, result.name, result.run_id
    summary = result.summary() | {"model": name, "data_fingerprint": dataset.fingerprint(config.seed)}
    report = build_report(summary, candidates, y_test, champion_info, labels)
    if result.promoted:
        fields = _card_fields(name, run_id, dataset, labels, best, config, result.selection_metric, result,
                              result.champion_metrics, result.reason)
        if now is not None:
            fields["created_at"] = now
        card = ModelCard.model_validate(fields)
        extra = {f"report/{file}": data for file, data in report.items()} | best.files
        _store_call(store, "publishing the version", registry.publish, card, best.onnx_bytes, extra)
        result.report_keys = {file: f"models/{name}/{run_id}/report/{file}" for file in report}
        try:
            _store_call(store, "replacing champion.json", registry.promote_over, name, run_id, champion, result.reason)
        except PromotionConflictError as exc:
            log.warning("%s: not promoted: %s", name, exc)
            result.promoted = False
            result.reason = f"{exc}; this run's version {run_id} is kept unpromoted (it was: {result.reason})"
        else:
            result.version = run_id
    else:
        for file, data in report.items():
            _store_call(store, "writing the report", store.write_bytes, f"runs/{name}/{run_id}/{file}", data)
        result.report_keys = {file: f"runs/{name}/{run_id}/{file}" for file in report}
    result.report_url = f"{store.url}/{result.report_keys['report.html']}"


def onnx_facts(onnx_bytes: bytes) -> dict[str, Any]:
    """What the exported graph is: its opsets, and its inputs with their shapes (a named first dimension,
    e.g. "batch", is a dynamic batch)."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    return {
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "inputs": {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input},
    }


def _card_fields(name, run_id, dataset, labels, best, config, metric, result, champion_metrics, reason) -> dict:
    import sklearn

    text, image = dataset.text_column is not None, getattr(dataset, "image", None)
    kind = "image" if image is not None else "text" if text else "tabular"
    return {
        "name": name, "version": run_id, "kind": kind,
        "features": [f.model_dump() for f in dataset.features], "text_field": dataset.text_column,
        "image": image.model_dump() if image is not None else None,
        "labels": labels, "threshold": min(max(best.threshold, 0.0), 1.0),
        "onnx_input": {"image": IMAGE_INPUT, "text": INPUT_IDS}.get(kind, TABULAR_INPUT),
        "onnx_output": OUTPUT, "metrics": {k: float(v) for k, v in best.test_metrics.items()},
        "data_fingerprint": dataset.fingerprint(config.seed), "algorithm": best.algorithm,
        "training": {
            "run_id": run_id, "candidate": best.name, "params": best.params, "seed": config.seed,
            "split": result.split, "selection_metric": metric, "validation_score": best.validation_score,
            "threshold_rule": best.threshold_rule, "confusion_test": best.confusion, "min_precision": config.min_precision,
            "rows_read": dataset.rows_read, "rows_quarantined": dataset.rows_quarantined,
            "rows_from_feedback": dataset.rows_from_feedback, "labels_corrected": dataset.labels_corrected,
            "sources": dataset.sources, "champion_before": result.champion_before,
            "champion_metrics": champion_metrics, "reason": reason, "onnx_max_diff": best.onnx_max_diff,
            "scikit_learn": sklearn.__version__,
            "onnx": onnx_facts(best.onnx_bytes),
            "missing_numbers": (MISSING_HANDLING.get(best.algorithm, IMPUTED)
                                if any(f.missing and f.type != "category" for f in dataset.features) else None),
            "categories": ("one-hot inside the graph; a missing value, or an unseen one the feature ignores, sets "
                           "no level" if any(f.type == "category" for f in dataset.features) else None),
        },
    }
