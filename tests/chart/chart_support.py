"""Shared by the chart checks: where the chart and the CRDs are, a Helm binary, cached renders."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aprendiz"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))


def _crds_dir() -> Path:
    """The upstream CRDs: $APRENDIZ_CRDS_DIR, else the shared folder beside this checkout, else the
    workplace's shared folder (a clone elsewhere, such as CI's fresh clone, still validates)."""
    candidates = [os.environ.get("APRENDIZ_CRDS_DIR"), ROOT.parent / "shared" / "crds", "/work/shared/crds"]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), ROOT.parent / "shared" / "crds")


CRDS_DIR = _crds_dir()
# The upstream CRD file of each custom kind (../shared/crds/README.md names their sources).
CRD_FILES = {
    ("ray.io", "RayService"): "ray.io_rayservices.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
}
REQUIRED = ["--set", "gatewayKeys.existingSecret=aprendiz-gateway-keys"]


def find_helm() -> str | None:
    """APRENDIZ_HELM, else var/tools/helm (make helm), else helm on PATH."""
    for candidate in (os.environ.get("APRENDIZ_HELM"), str(ROOT / "var" / "tools" / "helm"), shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout[-2000:]}")
    return result


class Rendered:
    """The objects of one `helm template`, by kind and name."""

    def __init__(self, text: str):
        self.text = text
        self.objects = [doc for doc in yaml.safe_load_all(text) if doc]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> list[tuple[str, dict]]:
        """(where, pod spec) of every pod the objects make."""
        specs = []
        for o in self.objects:
            where = f"{o['kind']}/{o['metadata']['name']}"
            spec = o.get("spec", {})
            if o["kind"] == "Pod":
                specs.append((where, spec))
            elif o["kind"] in ("Deployment", "Job"):
                specs.append((where, spec["template"]["spec"]))
            elif o["kind"] == "CronJob":
                specs.append((where, spec["jobTemplate"]["spec"]["template"]["spec"]))
            elif o["kind"] == "RayService":
                cluster = spec["rayClusterConfig"]
                specs.append((f"{where} head", cluster["headGroupSpec"]["template"]["spec"]))
                for group in cluster.get("workerGroupSpecs", []):
                    specs.append((f"{where} {group['groupName']} workers", group["template"]["spec"]))
        return specs

    def serve_config(self) -> dict:
        return yaml.safe_load(self.one("RayService")["spec"]["serveConfigV2"])


_renders: dict[tuple, Rendered] = {}


def render(helm: str, *extra: str, values: Path | None = None) -> Rendered:
    """`helm template` of the chart (cached per arguments) with a scenario file and/or extra arguments."""
    args = ["template", "aprendiz", str(CHART), "--namespace", "aprendiz", *REQUIRED]
    if values is not None:
        args += ["-f", str(values)]
    args += list(extra)
    key = tuple(args)
    if key not in _renders:
        _renders[key] = Rendered(run_helm(helm, *args).stdout)
    return _renders[key]


def scenario_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


# -- custom resources against the upstream CRDs ------------------------------------------------


def _strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused where the API server would prune them silently."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


@functools.cache
def _crd_schema(crds_dir, group: str, kind: str, version: str) -> dict:
    crd = yaml.load((crds_dir / CRD_FILES[(group, kind)]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _strict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{CRD_FILES[(group, kind)]} serves no version {version}")


@functools.cache
def _validator(crds_dir, group: str, kind: str, version: str):
    import jsonschema

    return jsonschema.Draft7Validator(_crd_schema(crds_dir, group, kind, version))


def validate_custom_resource(crds_dir, obj: dict) -> list[str]:
    group, version = obj["apiVersion"].split("/")
    validator = _validator(crds_dir, group, obj["kind"], version)
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
