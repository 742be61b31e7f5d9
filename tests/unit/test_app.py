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


@pytest.mark.parametrize("access_log", [False, True])
def test_the_request_path_access_log_follows_the_config(access_log):
    """Off by default (it cost ~10% of classifier throughput); `ingress.access_log: true` brings it back."""
    extra = {"ingress": {"access_log": True}} if access_log else {}
    app = build_app(args(classifiers=[{"name": "cancer"}], **extra))
    ingress = bound_deployment(app)
    classifier = bound_deployment(ingress.init_kwargs["classifiers"]["cancer"])
    for deployment in (ingress, classifier):
        assert deployment.logging_config["enable_access_log"] is access_log, deployment.name
