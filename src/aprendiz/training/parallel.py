"""Where a training run's tabular candidates are fit: in this process one after the other
(``LocalRunner``, the default), or as Ray tasks (``RayRunner``) on a Ray started for the run or
the cluster the job runs in (a KubeRay RayJob's).

On Ray, every candidate's every grid point is its own task (one CPU each): the point is fit on
train, thresholded on validation, exported and verified on test exactly as in this process, and
the candidate keeps its best point by the validation score, with every point's score in its
search list. The split goes to the object store once and every task reads it from there. A
point that fails is reported as the candidate's error only when every point of it failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol

from aprendiz.registry import Feature
from aprendiz.training.candidates import CandidateResult, train_candidate
from aprendiz.training.config import LOWER_IS_BETTER, CandidateConfig, TrainingConfig
from aprendiz.training.dataset import Split

log = logging.getLogger("aprendiz.training")


class CandidateRunner(Protocol):
    def train(self, candidates: list[CandidateConfig], split: Split, config: TrainingConfig,
              features: list[Feature]) -> list[CandidateResult]: ...


class LocalRunner:
    """Every candidate in this process, one after the other (its grid searched in turn)."""

    def __init__(self, progress=None) -> None:
        self._progress = progress or (lambda items: items)

    def train(self, candidates, split, config, features):
        return [train_candidate(c, split, config, features) for c in self._progress(candidates)]


def grid_points(candidate: CandidateConfig) -> list[CandidateConfig]:
    """The candidate once per combination of its search grid, each with that combination as its
    params and no grid (a candidate without a grid is its one point)."""
    from sklearn.model_selection import ParameterGrid

    return [candidate.model_copy(update={"params": {**candidate.params, **point}, "search": {}})
            for point in ParameterGrid(candidate.search)]


def best_point(candidate: CandidateConfig, points: list[CandidateConfig], results: list[CandidateResult],
               metric: str) -> CandidateResult:
    """The candidate's result: its best point by the validation score, with every point's score
    as its search list (as a search in one process records it)."""
    search = [{"params": {k: p.params[k] for k in candidate.search}, "validation": r.validation_score}
              for p, r in zip(points, results) if r.ok]
    ok = [r for r in results if r.ok]
    if not ok:
        failed = results[0]
        return replace(failed, error="; ".join(sorted({r.error or "" for r in results})))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best = max(ok, key=lambda r: sign * r.validation_score)
    return replace(best, search=search, fit_seconds=sum(r.fit_seconds for r in results))


def _train_point(point: CandidateConfig, split: Split, config: TrainingConfig, features: list[Feature]) -> CandidateResult:
    """One task: a grid point trained as in this process, with the Ray node it ran on."""
    import ray

    result = train_candidate(point, split, config, features)
    result.node = ray.get_runtime_context().get_node_id()
    return result


@contextmanager
def ray_session(address: str) -> Iterator[bool]:
    """Ray for the block: ``"local"`` starts one on this machine (stopped after), ``"auto"`` joins
    the cluster this process runs in (a RayJob's), another value is a cluster address; a Ray this
    process has already joined is used as it is (and left running). Yields whether Ray was
    started or joined here."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address == "local":
            ray.init(**options)
        else:
            ray.init(address=address, **options)
    try:
        yield started_here
    finally:
        if started_here:
            ray.shutdown()


class RayRunner:
    """Every grid point of every candidate as a Ray task of ``cpus_per_task`` CPUs.

    ``address``: ``"local"`` starts a Ray on this machine for the run (and stops it after);
    ``"auto"`` joins the cluster this process runs in (a RayJob's, or one ``ray start`` made);
    any other value is a cluster address (``host:6379`` or ``ray://host:10001``). A Ray this
    process has already joined is used as it is."""

    def __init__(self, address: str = "local", *, cpus_per_task: float = 1.0) -> None:
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.nodes: set[str] = set()  # the Ray nodes the last run's tasks ran on

    def train(self, candidates, split, config, features):
        import ray

        with ray_session(self.address):
            task = ray.remote(num_cpus=self.cpus_per_task, max_retries=1)(_train_point)
            split_ref = ray.put(split)
            grids = [grid_points(c) for c in candidates]
            refs = [[task.remote(point, split_ref, config, features) for point in points] for points in grids]
            log.info("training %d grid points of %d candidates as Ray tasks on %s", sum(map(len, grids)),
                     len(candidates), ray.get_runtime_context().gcs_address)
            results = [ray.get(r) for r in refs]
        self.nodes = {r.node for rs in results for r in rs if r.node}
        return [best_point(c, points, rs, config.selection_metric)
                for c, points, rs in zip(candidates, grids, results)]
