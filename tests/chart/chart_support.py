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
    ("ray.io", "RayJob"): "ray.io_rayjobs.yaml",
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
            elif o["kind"] in ("RayService", "RayJob"):
                cluster = spec["rayClusterConfig" if o["kind"] == "RayService" else "rayClusterSpec"]
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


# -- Kubernetes' Pod Security Standards, "restricted" profile (baseline included) ---------------
RESTRICTED_VOLUME_KINDS = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
BASELINE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                    "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(spec: dict) -> list[str]:
    """What a pod spec breaks of the restricted Pod Security Standard (Kubernetes' documented
    controls, checked as the admission controller would on the rendered spec)."""
    problems = []
    pod = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_KINDS:
            problems.append(f"volume {volume['name']} is of a kind restricted forbids: {sorted(kinds)}")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in BASELINE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not allowed")
    if pod.get("runAsUser") == 0:
        problems.append("the pod runs as user 0")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    containers = spec.get("initContainers", []) + spec.get("containers", []) + spec.get("ephemeralContainers", [])
    for c in containers:
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} does not set allowPrivilegeEscalation: false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where} adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True):
            problems.append(f"{where} may run as root (runAsNonRoot is not true)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where} runs as user 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where} has no RuntimeDefault or Localhost seccomp profile")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"{where} sets procMount {sc['procMount']}")
        if (sc.get("seLinuxOptions") or {}).get("type") not in (None, "", "container_t", "container_init_t",
                                                                 "container_kvm_t", "container_engine_t"):
            problems.append(f"{where} sets an SELinux type")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where} uses host port {port['hostPort']}")
    return problems
