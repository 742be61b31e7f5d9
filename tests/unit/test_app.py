"""aprendiz.services.app: build_app(args) validates the platform config and binds the graph."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve.deployment import Application

from aprendiz.services.app import build_app
from aprendiz.services.raycompat import autoscaling_of, bound_deployment


def args(**extra) -> dict:
    return {"generators": [{"id": "tiny", "source": "/models/tiny", "engine_kwargs": {"max_model_len": 128}}], **extra}


def _deployment_names(app: Application) -> set[str]:
    ingress = bound_deployment(app)
    models = ingress.init_kwargs["llm_deployments"].values()
    return {ingress.name} | {bound_deployment(m).name for m in models}


def test_build_app_from_serve_yaml_style_args():
    app = build_app(args())
    assert isinstance(app, Application)
    assert _deployment_names(app) == {"Ingress", "LLMServer:tiny"}


def test_build_app_from_a_config_file(repo_root):
    app = build_app({"config_file": str(repo_root / "config" / "aprendiz.yaml")})
    assert _deployment_names(app) == {"Ingress", "LLMServer:aprendiz-tiny-chat"}


def test_ingress_options_come_from_the_config():
    app = build_app(args(ingress={"max_ongoing_requests": 17, "autoscaling": {"min_replicas": 2, "max_replicas": 3}}))
    deployment = bound_deployment(app)
    assert deployment.max_ongoing_requests == 17
    assert autoscaling_of(deployment).min_replicas == 2


def test_build_app_rejects_bad_args_before_anything_starts():
    with pytest.raises(ValidationError, match="generatorz"):
        build_app({"generatorz": []})
    with pytest.raises(ValidationError, match="serves no model"):
        build_app({})


def test_classifiers_join_the_ingress_with_their_serve_options():
    app = build_app(
        args(
            classifiers=[
                {
                    "name": "cancer",
                    "placement": "replica",
                    "version": "20260101T000000Z-abcd",
                    "autoscaling": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3},
                    "max_queued_requests": 99,
                }
            ],
            store={"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:9000"},
        )
    )
    classifier = bound_deployment(bound_deployment(app).init_kwargs["classifiers"]["cancer"])
    assert classifier.name == "Classifier:cancer"
    assert classifier.user_config == {"version": "20260101T000000Z-abcd", "poll_interval_s": 5.0}
    assert classifier.max_queued_requests == 99
    assert autoscaling_of(classifier).max_replicas == 4
    assert classifier.init_kwargs["store"] == {"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:9000"}


def test_a_gpu_classifier_asks_ray_for_its_gpus_and_accelerator_type():
    """Its replicas, never the ingress (no card is read: the store is never reached), ask for the
    GPU share and type that land them on the GPU worker group; CPU ones ask for CPUs only."""
    app = build_app(args(classifiers=[
        {"name": "lesions", "accelerator": "gpu", "accelerator_type": "L4", "num_gpus": 0.5, "num_cpus": 1},
        {"name": "digits", "accelerator": "gpu"},
        {"name": "cancer", "placement": "replica"},
    ], store={"url": "s3://bucket/prefix", "endpoint_url": "http://127.0.0.1:1"}))
    ingress = bound_deployment(app)
    deployments = {name: bound_deployment(d) for name, d in ingress.init_kwargs["classifiers"].items()}
    assert deployments["lesions"].ray_actor_options == {"num_cpus": 1, "num_gpus": 0.5, "accelerator_type": "L4"}
    assert deployments["digits"].ray_actor_options == {"num_cpus": 0.5, "num_gpus": 1}
    assert deployments["cancer"].ray_actor_options == {"num_cpus": 0.5}
    assert ingress.init_kwargs["placements"]["lesions"]["placement"] == "replica"
    assert deployments["lesions"].init_kwargs["hourly_usd"] == pytest.approx(0.4)  # half an L4 at the default price


def test_embedding_models_join_the_ingress_with_their_serve_options():
    app = build_app(args(embeddings=[{"id": "minilm", "source": "/models/minilm", "num_cpus": 0.5, "max_queued_requests": 7,
                                      "autoscaling": {"min_replicas": 1, "max_replicas": 3}}]))
    embedder = bound_deployment(bound_deployment(app).init_kwargs["embedders"]["minilm"])
    assert embedder.name == "Embedder:minilm" and embedder.max_queued_requests == 7
    assert embedder.ray_actor_options["num_cpus"] == 0.5 and autoscaling_of(embedder).max_replicas == 3
    assert embedder.init_kwargs["model"]["source"] == "/models/minilm"


@pytest.mark.parametrize("access_log", [False, True])
def test_the_request_path_access_log_follows_the_config(access_log):
    """Off by default (it cost ~10% of classifier throughput); `ingress.access_log: true` brings it back."""
    extra = {"ingress": {"access_log": True}} if access_log else {}
    app = build_app(args(classifiers=[{"name": "cancer", "placement": "replica"}], **extra))
    ingress = bound_deployment(app)
    classifier = bound_deployment(ingress.init_kwargs["classifiers"]["cancer"])
    for deployment in (ingress, classifier):
        assert deployment.logging_config["enable_access_log"] is access_log, deployment.name


def test_a_light_champion_is_served_by_the_ingress_and_a_heavy_one_by_its_own_replicas(tmp_path, job_training):
    """``auto`` reads the serving version's card when the application is built: the trained
    breast-cancer logistic regression (microseconds a row) goes into the ingress, so no deployment
    is made for it; the same model marked heavy (a MiniLM-sized card) gets its own."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    registry = ModelRegistry(ObjectStore(str(tmp_path / "store")))
    job_training.train_builtin(registry, "light")
    job_training.train_builtin(registry, "heavy")
    heavy = registry.champion("heavy").version
    card = registry.card("heavy", heavy)
    registry.store.write_json(  # the card of a transformer encoder: 5 ms a row, 90 MB
        f"models/heavy/{heavy}/card.json",
        card.model_copy(update={"metrics": {**card.metrics, "latency_ms": 5.0, "size_bytes": 9e7}}).model_dump(mode="json"),
    )
    app = build_app(args(classifiers=[{"name": "light"}, {"name": "heavy"}, {"name": "pinned", "placement": "ingress"}],
                         store={"url": str(tmp_path / "store")}))
    ingress = bound_deployment(app)
    assert set(ingress.init_kwargs["classifiers"]) == {"heavy"}
    assert bound_deployment(ingress.init_kwargs["classifiers"]["heavy"]).name == "Classifier:heavy"
    placements = ingress.init_kwargs["placements"]
    assert {name: p["placement"] for name, p in placements.items()} == {
        "light": "ingress", "heavy": "replica", "pinned": "ingress"}
    assert "light enough" in placements["light"]["placement_reason"]
    assert "over 1 ms a row" in placements["heavy"]["placement_reason"]
    assert placements["pinned"]["placement_reason"] == "placement: ingress in the config"
