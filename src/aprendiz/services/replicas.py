"""Serve options shared by the model deployments that are plain replicas (classifiers placed in
replicas, embedding models): name, autoscaling, admission, CPUs, health checks, access log."""

from __future__ import annotations

from typing import Any, Protocol

from aprendiz.config import Autoscaling


class ReplicaModel(Protocol):
    autoscaling: Autoscaling
    max_ongoing_requests: int
    max_queued_requests: int
    num_cpus: float


def replica_options(name: str, model: ReplicaModel, *, access_log: bool) -> dict[str, Any]:
    return {
        "name": name,
        "autoscaling_config": model.autoscaling.serve_options(),
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
        "ray_actor_options": {"num_cpus": model.num_cpus},
        "health_check_period_s": 10,
        "logging_config": {"enable_access_log": access_log},
    }
