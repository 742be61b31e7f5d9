"""Serve options shared by the model deployments that are plain replicas (classifiers placed in
replicas, embedding models): name, autoscaling, admission, CPUs and GPUs, health checks, access log."""

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
        "ray_actor_options": actor_options(model),
        "health_check_period_s": 10,
        "logging_config": {"enable_access_log": access_log},
    }


def actor_options(model: ReplicaModel) -> dict[str, Any]:
    """Ray's resources for one replica: its CPUs and, for a model with ``accelerator: gpu``, its GPUs
    (a fraction shares one) and the accelerator type. The GPU request is what lands the replica on
    the GPU worker group (and makes the autoscaler start one from zero); the type keeps it off other
    GPUs. Models without accelerator fields (embeddings) run on CPU."""
    options: dict[str, Any] = {"num_cpus": model.num_cpus}
    if getattr(model, "accelerator", "cpu") == "gpu":
        options["num_gpus"] = getattr(model, "num_gpus")
        if accelerator_type := getattr(model, "accelerator_type", None):
            options["accelerator_type"] = accelerator_type
    return options
