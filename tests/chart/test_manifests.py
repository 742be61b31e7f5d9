"""manifests/: the KServe InferenceService (against KServe's CRD, its config against PlatformConfig)
and the kind cluster config."""

from __future__ import annotations

import yaml
from chart_support import ROOT, validate_custom_resource

MANIFESTS = ROOT / "manifests"


def _objects(path):
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def test_inferenceservice_matches_the_kserve_crd(crds_dir):
    import kubernetes_validate

    objects = {o["kind"]: o for o in _objects(MANIFESTS / "kserve" / "inferenceservice.yaml")}
    assert validate_custom_resource(crds_dir, objects["InferenceService"]) == []
    kubernetes_validate.validate(objects["ConfigMap"], "1.35.0", strict=True)


def test_inferenceservice_serves_a_valid_platform_config():
    import typer

    from aprendiz.cli import app
    from aprendiz.config import PlatformConfig

    objects = {o["kind"]: o for o in _objects(MANIFESTS / "kserve" / "inferenceservice.yaml")}
    config = PlatformConfig.model_validate(yaml.safe_load(objects["ConfigMap"]["data"]["aprendiz.yaml"]))
    assert [c.name for c in config.classifiers] == [objects["InferenceService"]["metadata"]["name"]]
    container = objects["InferenceService"]["spec"]["predictor"]["containers"][0]
    serve = typer.main.get_command(app).commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    command = container["command"]
    assert command[:2] == ["aprendiz", "serve"] and {c for c in command if c.startswith("--")} <= options
    assert command[command.index("--port") + 1] == "8080"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"].startswith("s3://") and env["APRENDIZ_METRICS_EXPORT_PORT"] != "8080"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    keys_file = yaml.safe_load(objects["ConfigMap"]["data"]["aprendiz.yaml"])["gateway"]["keys_file"]
    assert keys_file.rsplit("/", 1)[0] in mounts


def test_kind_cluster_config():
    (cluster,) = _objects(MANIFESTS / "kind" / "cluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    assert sorted(n["role"] for n in cluster["nodes"]) == ["control-plane", "worker"]
