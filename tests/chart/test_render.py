"""charts/aprendiz rendered for the default values and every ci/ scenario, and each object checked:
built-in kinds against Kubernetes' schemas, custom resources against the upstream CRDs, the Serve
config against Ray's own schema and the platform config, and the chart's own rules."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from chart_support import (
    CHART,
    CRD_FILES,
    REQUIRED,
    SCENARIOS,
    render,
    restricted_violations,
    run_helm,
    scenario_id,
    validate_custom_resource,
)

K8S_VERSION = "1.35.0"
CUSTOM_GROUPS = ("ray.io/", "monitoring.coreos.com/", "gateway.networking.k8s.io/")


# -- helm itself ---------------------------------------------------------------------------------


def test_helm_lint_strict(helm, scenario):
    args = ["lint", "--strict", str(CHART), *REQUIRED] + (["-f", str(scenario)] if scenario else [])
    result = run_helm(helm, *args)
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_scenarios_are_there():
    assert {scenario_id(p) for p in SCENARIOS} >= {"cpu", "gpu", "image-gpu", "classifier-only", "monitoring-off",
                                                   "rented-only"}


# -- every object valid --------------------------------------------------------------------------


def test_builtin_kinds_match_kubernetes_schemas(rendered):
    import kubernetes_validate

    problems = []
    for obj in rendered.objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_custom_resources_match_upstream_crds(rendered, crds_dir):
    problems = []
    checked = 0
    for obj in rendered.objects:
        group = obj["apiVersion"].split("/")[0]
        if (group, obj["kind"]) in CRD_FILES:
            problems += validate_custom_resource(crds_dir, obj)
            checked += 1
        elif obj["apiVersion"].startswith(CUSTOM_GROUPS) and obj["kind"] != "HTTPRoute":
            problems.append(f"{obj['kind']} ({obj['apiVersion']}) has no CRD to check it against")
    assert checked >= 1 and not problems, "\n".join(problems)


def test_strict_crd_check_refuses_unknown_fields(helm, crds_dir):
    """The CRD check itself catches a misspelled field (what the API server would drop silently)."""
    rayservice = json.loads(json.dumps(render(helm).one("RayService")))
    rayservice["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    problems = validate_custom_resource(crds_dir, rayservice)
    assert any("enableInTreeAutoscalling" in p for p in problems), problems
    assert any("num-cpus" in p and "string" in p for p in problems), problems


def test_httproute_shape(helm):
    route = render(helm, values=CHART / "ci" / "gpu-values.yaml").one("HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert backend == {"name": "aprendiz", "port": 8000}


# -- the Serve application: one source of truth --------------------------------------------------


def test_serve_config_is_valid_for_ray_and_the_platform(rendered):
    from ray.serve.schema import ServeDeploySchema

    from aprendiz.config import PlatformConfig

    serve = ServeDeploySchema.model_validate(rendered.serve_config())
    assert [a.name for a in serve.applications] == ["aprendiz"]
    app = serve.applications[0]
    assert (app.route_prefix, app.import_path) == ("/", "aprendiz.services.app:build_app")
    assert serve.http_options.port == 8000
    platform = PlatformConfig.model_validate(app.args)
    if "gateway" in PlatformConfig.model_fields:
        assert platform.gateway.keys_file == "/etc/aprendiz/keys/keys.yaml", "the gateway must always have keys"


def test_training_jobs_read_the_same_config(rendered):
    config_map = next(c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-config"))
    assert yaml.safe_load(config_map["data"]["aprendiz.yaml"]) == rendered.serve_config()["applications"][0]["args"]


def test_serve_args_are_the_values_platform(helm):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["platform"]
    args = render(helm).serve_config()["applications"][0]["args"]
    assert args == values


def test_in_chart_minio_becomes_the_store_endpoint(helm):
    rendered = render(helm, values=CHART / "ci" / "cpu-values.yaml")
    args = rendered.serve_config()["applications"][0]["args"]
    service = next(s for s in rendered.of_kind("Service") if s["metadata"]["name"] == "aprendiz-minio")
    assert args["store"]["endpoint_url"] == f"http://{service['metadata']['name']}:9000"
    assert service["spec"]["ports"][0]["port"] == 9000
    secret = rendered.one("Secret")
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


# -- values.schema.json and readable failures ----------------------------------------------------


def test_schema_is_generated_from_platform_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chart_schema", CHART.parents[1] / "scripts" / "chart_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (CHART / "values.schema.json").read_text()
    fresh = module.render(module.generate(json.loads(committed)))
    assert fresh == committed, "charts/aprendiz/values.schema.json is stale: run `make chart-schema`"


def test_schema_closes_every_object():
    """Every object schema either lists its properties and refuses others, or types its free-form values."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(schema, "#")
    assert not open_objects, f"object schemas accepting unknown keys: {open_objects}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
        (["--set", "ray.cpuWorkers.maxReplicas=lots"], "at '/ray/cpuWorkers/maxReplicas': got string, want integer"),
        (["--set", "storage.minio.enabled=yes"], "at '/storage/minio/enabled': got string, want boolean"),
        (["--set", "images.cpu.pullPolicy=Sometimes"], "at '/images/cpu/pullPolicy'"),
        (["--set-json", 'platform.generators=[{"id":"m","source":"/m","accelerator":"tpu"}]'],
         "at '/platform/generators/0/accelerator': value must be one of 'cpu', 'gpu'"),
        (["--set-json", 'platform.classifiers=[{"name":"x","max_batchsize":8}]'],
         "additional properties 'max_batchsize' not allowed"),
        (["--set-json", 'secretEnv={"OPENAI_API_KEY":"sk-literal"}'], "at '/secretEnv/OPENAI_API_KEY'"),
        (["--set", "ray.serveIngress=nginx"], "at '/ray/serveIngress': value must be one of 'haproxy', 'proxy'"),
    ],
    ids=["unknown-top-level", "wrong-type", "wrong-bool", "bad-enum", "platform-enum", "platform-unknown", "literal-secret",
         "serve-ingress"],
)
def test_schema_rejects_bad_values_readably(helm, args, message):
    result = run_helm(helm, "template", "aprendiz", str(CHART), *REQUIRED, *args, check=False)
    assert result.returncode != 0, f"helm accepted {args}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "gatewayKeys.existingSecret is required"),
        (["--set", "gatewayKeys.existingSecret=k", "--set-json",
          'platform.generators=[{"id":"big","source":"s3://m/big","accelerator":"gpu"}]'],
         'generator "big" has accelerator: gpu but ray.gpuWorkers.enabled is false'),
        (["--set", "gatewayKeys.existingSecret=k", "--set-json", 'platform.classifiers=[{"name":"x","accelerator":"gpu"}]'],
         'classifier "x" has accelerator: gpu but ray.gpuWorkers.enabled is false'),
        (["--set", "gatewayKeys.existingSecret=k", "--set", "ray.gpuWorkers.enabled=true", "--set-json",
          'platform.classifiers=[{"name":"x","accelerator":"gpu","accelerator_type":"L4"}]'],
         'classifier "x" asks for accelerator_type L4 but ray.gpuWorkers.acceleratorType is "": the autoscaler could '
         "not tell"),
        (["--set", "gatewayKeys.existingSecret=k", "-f", str(CHART / "ci" / "image-gpu-values.yaml"),
          "--set", "ray.gpuWorkers.acceleratorType=A10G"],
         'classifier "lesions" asks for accelerator_type L4 but ray.gpuWorkers.acceleratorType is "A10G"'),
        (["--set", "gatewayKeys.existingSecret=k", "--set", "monitoring.serviceMonitor.enabled=true"],
         "Ray's metrics would be scraped twice"),
        (["--set", "gatewayKeys.existingSecret=k", "--set", "ray.cpuWorkers.enabled=false"], "nothing could serve"),
    ],
    ids=["no-keys-secret", "gpu-model-without-gpu-workers", "gpu-classifier-without-gpu-workers",
         "accelerator-type-not-advertised", "accelerator-type-of-other-gpus", "two-monitors", "no-workers"],
)
def test_render_fails_readably(helm, args, message):
    result = run_helm(helm, "template", "aprendiz", str(CHART), *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_rented_key_must_come_from_a_secret(helm):
    result = run_helm(
        helm, "template", "aprendiz", str(CHART), *REQUIRED, "-f", str(CHART / "ci" / "rented-only-values.yaml"),
        "--set-json", "secretEnv={}", check=False,
    )
    assert result.returncode != 0
    assert 'rented model "gpt-4o-mini" reads its API key from $OPENAI_API_KEY: add secretEnv.OPENAI_API_KEY' in result.stderr


def test_every_value_is_commented():
    """values.yaml: each key has a comment on its line or on the line(s) above (flow mappings count as one value)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z_][\w.-]*):", line)
        if not match or "#" in line.split(":", 1)[1]:
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            missing.append(f"values.yaml:{i + 1}: {line.strip()}")
    assert not missing, "values without a comment:\n" + "\n".join(missing)


def test_chart_metadata():
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((CHART.parents[1] / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def test_one_kind_per_template_file(helm):
    kinds: dict[str, set[str]] = {}
    for path in [None, *SCENARIOS]:
        if path is not None and "rented" in path.name:
            continue
        for doc in render(helm, values=path).text.split("\n---"):
            source = re.search(r"^# Source: (\S+)", doc, re.MULTILINE)
            kind = re.search(r"^kind: (\S+)", doc, re.MULTILINE)
            if source and kind:
                kinds.setdefault(source.group(1), set()).add(kind.group(1))
    mixed = {source: sorted(k) for source, k in kinds.items() if len(k) > 1}
    assert not mixed, f"template files rendering more than one kind: {mixed}"
    rendered_files = {s.rsplit("/", 1)[-1] for s in kinds}
    template_files = {p.name for p in (CHART / "templates").rglob("*.yaml")}
    assert template_files <= rendered_files, f"templates no scenario renders: {template_files - rendered_files}"


# -- the chart's rules ---------------------------------------------------------------------------


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_pods_are_restricted_with_resources(rendered):
    problems = []
    for where, spec in rendered.pod_specs():
        pod = spec.get("securityContext", {})
        if not (pod.get("runAsNonRoot") and pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
            problems.append(f"{where}: pod securityContext is not restricted: {pod}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token")
        for c in _containers(spec):
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where} {c['name']}: securityContext is not restricted: {sc}")
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})):
                    problems.append(f"{where} {c['name']}: no cpu/memory {bound}")
    for rayservice in rendered.of_kind("RayService"):
        autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
        if autoscaler["securityContext"].get("allowPrivilegeEscalation") is not False or "limits" not in autoscaler["resources"]:
            problems.append("the autoscaler sidecar is not restricted or has no limits")
    assert not problems, "\n".join(problems)


def test_every_pod_passes_the_restricted_pod_security_standard(rendered):
    problems = [f"{where}: {p}" for where, spec in rendered.pod_specs() for p in restricted_violations(spec)]
    assert not problems, "\n".join(problems)


def test_the_restricted_check_catches_what_it_should():
    bad = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                           "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}]}
    found = "\n".join(restricted_violations(bad))
    for words in ("hostNetwork", "hostPath", "privileged", "allowPrivilegeEscalation", "drop ALL", "SYS_ADMIN",
                  "runAsNonRoot", "seccomp", "host port"):
        assert words in found, words


def test_ray_containers_have_a_read_only_root_and_bounded_scratch(helm):
    """Ray writes its session, logs and caches to /tmp (HOME too): an emptyDir with a size limit,
    the root filesystem read-only; the object store's /dev/shm is bounded and Ray is told its size."""
    cluster = render(helm).one("RayService")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"] == "10Gi"
        assert {"name": "HOME", "value": "/tmp"} in container["env"]
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        store_bytes = int(group["rayStartParams"]["object-store-memory"])
        assert shm["medium"] == "Memory" and int(shm["sizeLimit"]) >= store_bytes == 1073741824
    limited = render(helm, "--set", "ray.objectStoreBytes=2147483648", "--set", "ray.tmpSizeLimit=20Gi")
    worker = limited.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["rayStartParams"]["object-store-memory"] == "2147483648"
    assert {v["name"]: v for v in worker["template"]["spec"]["volumes"]}["tmp"]["emptyDir"]["sizeLimit"] == "20Gi"


def test_long_running_pods_have_probes_and_grace(rendered):
    problems = []
    for where, spec in rendered.pod_specs():
        if where.startswith(("RayService", "Deployment")):
            for c in spec["containers"]:
                if "readinessProbe" not in c or "livenessProbe" not in c:
                    problems.append(f"{where} {c['name']}: no readiness or liveness probe")
        if where.startswith("RayService") and spec.get("terminationGracePeriodSeconds", 30) < 60:
            problems.append(f"{where}: terminationGracePeriodSeconds under 60")
    assert not problems, "\n".join(problems)


def test_ray_cluster_layout(helm):
    cluster = render(helm).one("RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (cpu,) = cluster["workerGroupSpecs"]
    assert cpu["template"]["spec"]["containers"][0]["image"] == "aprendiz/serve-cpu:0.1.0"
    assert render(helm).one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def _ray_containers(rendered) -> list[dict]:
    cluster = rendered.one("RayService")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    return [p["template"]["spec"]["containers"][0] for p in pods]


def test_haproxy_ingress_on_every_ray_pod_by_default(helm):
    """Serve reads its ingress mode in every process of every node: head and workers alike."""
    from aprendiz.cli.runner import HIGH_THROUGHPUT_ENV

    # The same variables `aprendiz serve` sets for a local cluster, all three of them.
    wanted = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_LOG_TO_STDERR": "1"}
    assert wanted == HIGH_THROUGHPUT_ENV
    for values in (None, CHART / "ci" / "gpu-values.yaml"):
        containers = _ray_containers(render(helm, values=values))
        assert len(containers) >= 2
        for container in containers:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert wanted.items() <= env.items(), container["name"]
    for container in _ray_containers(render(helm, "--set", "ray.serveIngress=proxy")):
        assert not any(e["name"] in wanted for e in container["env"]), container["name"]


def test_the_idle_cpu_settings_on_every_serving_ray_pod(helm):
    """The intervals `aprendiz serve` lengthens for an idle local cluster, on the chart's RayService
    pods too; a training RayJob's pods keep Ray's defaults (its tasks reuse idle workers)."""
    from aprendiz.cli.runner import IDLE_ENV

    wanted = {name: value for name, (value, _) in IDLE_ENV.items()}
    for values in (None, CHART / "ci" / "gpu-values.yaml"):
        for container in _ray_containers(render(helm, values=values)):
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert wanted.items() <= env.items(), container["name"]
    jobs = render(helm, values=CHART / "ci" / "classifier-only-values.yaml").of_kind("RayJob")
    assert jobs and not any(name in str(job) for job in jobs for name in wanted)


def test_vllms_compile_cache_on_a_claim_outlives_the_pods(helm):
    assert not any("VLLM_CACHE_ROOT" in str(c) for c in _ray_containers(render(helm)))  # /tmp by default
    rendered = render(helm, "--set", "ray.compileCache.existingClaim=vllm-cache")
    cluster = rendered.one("RayService")["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]:
        spec = pod["template"]["spec"]
        container = spec["containers"][0]
        assert {"name": "VLLM_CACHE_ROOT", "value": "/var/cache/vllm"} in container["env"]
        assert {"name": "vllm-cache", "mountPath": "/var/cache/vllm"} in container["volumeMounts"]
        assert {"name": "vllm-cache", "persistentVolumeClaim": {"claimName": "vllm-cache"}} in spec["volumes"]


def test_gpu_workers(helm):
    rendered = render(helm, values=CHART / "ci" / "gpu-values.yaml")
    groups = {g["groupName"]: g for g in rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert (gpu["minReplicas"], gpu["maxReplicas"], gpu["replicas"]) == (0, 4, 0)
    pod = gpu["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "aprendiz/serve-gpu:0.1.0"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert groups["cpu"]["template"]["spec"]["containers"][0]["image"] == "aprendiz/serve-cpu:0.1.0"
    generator = rendered.serve_config()["applications"][0]["args"]["generators"][0]
    assert (generator["accelerator"], generator["autoscaling"]["min_replicas"]) == ("gpu", 0)
    # a worker started from zero streams the s3:// weights into GPU memory (Run:ai model streamer)
    from aprendiz.config import GeneratorModel

    engine_kwargs = GeneratorModel.model_validate(generator).llm_config()["engine_kwargs"]
    assert engine_kwargs["load_format"] == "runai_streamer"


def _autoscaler_view(group: dict) -> dict:
    """The resources Ray's autoscaler believes a worker of ``group`` has before it starts one: all it
    scales from zero by."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_ray_resources_from_group_spec

    return _get_ray_resources_from_group_spec(group, is_head=False)


def test_an_image_classifier_on_the_gpu_worker_group(helm):
    """ci/image-gpu-values.yaml: the lesions classifier's replicas ask Ray for half an L4, and the GPU
    worker group, at zero workers, is one the autoscaler knows has an L4 to start for them."""
    from ray.serve.deployment import Application

    from aprendiz.config import PlatformConfig
    from aprendiz.services.classifier.deployment import build_classifier_deployment
    from aprendiz.services.raycompat import bound_deployment

    rendered = render(helm, values=CHART / "ci" / "image-gpu-values.yaml")
    platform = PlatformConfig.model_validate(rendered.serve_config()["applications"][0]["args"])
    classifiers = {c.name: c for c in platform.classifiers}
    options = {}
    for name, model in classifiers.items():
        app = build_classifier_deployment(model, platform.store_for(model), hourly_usd=0.0)
        assert isinstance(app, Application)
        options[name] = bound_deployment(app).ray_actor_options
    assert options["lesions"] == {"num_cpus": 0.5, "num_gpus": 0.5, "accelerator_type": "L4"}
    assert "num_gpus" not in options["breast-cancer"] and "accelerator_type" not in options["breast-cancer"]
    assert platform.gateway.classifier_hourly_usd(classifiers["lesions"]) == pytest.approx(0.4)  # half an L4

    groups = {g["groupName"]: g for g in rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (0, 0, 2)  # from zero
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["image"] == "aprendiz/serve-gpu:0.1.0"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    view = _autoscaler_view(gpu)
    assert view["GPU"] == 1 and view["accelerator_type:L4"] == 1
    # What one lesions replica asks Ray for (Ray's accelerator_type option is this resource) fits that view.
    demand = {"CPU": 0.5, "GPU": 0.5, "accelerator_type:L4": 0.001}
    assert all(view.get(resource, 0) >= amount for resource, amount in demand.items()), (demand, view)
    assert "accelerator_type:L4" not in _autoscaler_view(groups["cpu"])


def test_gpu_workers_advertise_no_accelerator_type_unless_named(helm):
    rendered = render(helm, "--set", "ray.gpuWorkers.enabled=true")
    gpu = next(g for g in rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
               if g["groupName"] == "gpu")
    assert "resources" not in gpu["rayStartParams"]
    assert not any(k.startswith("accelerator_type:") for k in _autoscaler_view(gpu))
    generator_gpus = render(helm, values=CHART / "ci" / "gpu-values.yaml").one("RayService")
    l4 = next(g for g in generator_gpus["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert _autoscaler_view(l4)["accelerator_type:L4"] == 1  # the L4 generator scales from zero too


def test_only_the_serve_port_is_exposed(rendered):
    for service in rendered.of_kind("Service"):
        ports = {p["port"] for p in service["spec"]["ports"]}
        name = service["metadata"]["name"]
        if name.endswith("-minio"):
            assert ports == {9000}
        elif name.endswith("-metrics"):
            assert ports == {8080} and service["spec"]["clusterIP"] == "None"
        else:
            assert ports == {8000} and service["spec"]["ports"][0]["targetPort"] == "serve", service
            assert service["spec"]["type"] == "ClusterIP"
    for ingress in rendered.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": "aprendiz", "port": {"name": "http"}}


def test_network_policy_guards_dashboard_and_gcs(helm):
    policy = render(helm).one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ray"
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])}
        if "from" not in rule:
            assert ports == {8000}, f"a rule open to everyone reaches {ports}"
        if ports & {8265, 6379}:
            assert rule["from"] and all("podSelector" in peer for peer in rule["from"]), rule
    prometheus = next(r for r in policy["spec"]["ingress"] if {p["port"] for p in r.get("ports", [])} == {8080})
    assert prometheus["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_monitoring_switches(helm):
    on = render(helm)
    monitor = on.one("PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    rule_names = [g["name"] for g in on.one("PrometheusRule")["spec"]["groups"]]
    assert rule_names == [
        g["name"] for p in sorted((CHART / "files" / "rules").glob("*.yaml")) for g in yaml.safe_load(p.read_text())["groups"]
    ]
    dashboards = [c for c in on.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == len(list((CHART / "files" / "dashboards").glob("*.json")))
    for dashboard in dashboards:
        for text in dashboard["data"].values():
            assert json.loads(text)["panels"]
    off = render(helm, values=CHART / "ci" / "monitoring-off-values.yaml")
    assert not [o for o in off.objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [c for c in off.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]


def test_training_cronjobs_run_the_cli(helm):
    import typer

    from aprendiz.cli import app

    train = typer.main.get_command(app).commands["train"]
    options = {opt for param in train.params for opt in param.opts}
    rendered = render(helm, values=CHART / "ci" / "classifier-only-values.yaml")
    cronjobs = {c["metadata"]["labels"]["aprendiz.dev/model"]: c for c in rendered.of_kind("CronJob")}
    assert set(cronjobs) == {"breast-cancer", "es-or-en"}
    for model, cronjob in cronjobs.items():
        assert cronjob["spec"]["schedule"] == "30 2 * * 1-5"
        command = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[:4] == ["aprendiz", "train", "--model", model]
        assert {c for c in command if c.startswith("--")} <= options, f"{command} uses options `aprendiz train` lacks"
        assert command[command.index("--config") + 1] == "/etc/aprendiz/config/aprendiz.yaml"
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not [o for o in rendered.objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


def test_the_evaluation_cronjob_runs_the_cli_through_the_entrance(helm):
    import typer

    from aprendiz.cli import app

    evaluate = typer.main.get_command(app).commands["evaluate"]
    options = {opt for param in evaluate.params for opt in param.opts}
    assert not [c for c in render(helm).of_kind("CronJob") if c["metadata"]["name"].endswith("-evaluate")]  # off by default
    rendered = render(helm, values=CHART / "ci" / "cpu-values.yaml")
    (cronjob,) = [c for c in rendered.of_kind("CronJob") if c["metadata"]["name"].endswith("-evaluate")]
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:4] == ["aprendiz", "evaluate", "--eval", "customer-service"]
    assert {c for c in command if c.startswith("--")} <= options, f"{command} uses options `aprendiz evaluate` lacks"
    assert command[command.index("--models") + 1] == "aprendiz-tiny-chat"  # every generator and rented chat model
    assert command[command.index("--judge") + 1] == "aprendiz-tiny-chat" and command[command.index("--limit") + 1] == "20"
    assert command[command.index("--url") + 1] == "http://aprendiz:8000"  # the entrance: keys, limits, metering
    key = next(e for e in container["env"] if e["name"] == "APRENDIZ_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "aprendiz-e2e-api-key", "key": "key"}
    models = render(helm, "--set", "evaluation.enabled=true", values=CHART / "ci" / "rented-only-values.yaml")
    (rented,) = [c for c in models.of_kind("CronJob") if c["metadata"]["name"].endswith("-evaluate")]
    listed = rented["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert listed[listed.index("--models") + 1].split(",") == [r["id"] for r in yaml.safe_load(
        (CHART / "ci" / "rented-only-values.yaml").read_text())["platform"]["rented"] if r.get("kind", "chat") == "chat"]


def test_training_rayjobs_run_the_cli_on_a_ray_cluster_of_their_own(helm, crds_dir):
    """training.rayJob: one KubeRay RayJob per model, `aprendiz train --ray auto` its entrypoint, on a
    cluster of the training image that KubeRay removes after the run; checked against KubeRay's CRD."""
    assert not render(helm).of_kind("RayJob")  # off by default
    rendered = render(helm, values=CHART / "ci" / "classifier-only-values.yaml")
    jobs = {j["metadata"]["labels"]["aprendiz.dev/model"]: j for j in rendered.of_kind("RayJob")}
    assert set(jobs) == {"breast-cancer", "es-or-en"}
    for model, job in jobs.items():
        assert validate_custom_resource(crds_dir, job) == []
        spec = job["spec"]
        assert spec["entrypoint"].split() == ["aprendiz", "train", "--model", model, "--config",
                                              "/etc/aprendiz/config/aprendiz.yaml", "--ray", "auto", "--pushgateway",
                                              "http://pushgateway.monitoring.svc:9091"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "K8sJobMode"
        (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
        assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
        head = spec["rayClusterSpec"]["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"  # the head schedules; the workers fit
        for pod in (head["template"]["spec"], workers["template"]["spec"]):
            (container,) = pod["containers"]
            assert container["image"].startswith("aprendiz/train:")
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/etc/aprendiz/config", "/tmp", "/dev/shm"}


def test_train_on_install_is_a_post_install_hook(helm):
    rendered = render(helm, values=CHART / "ci" / "cpu-values.yaml")
    (job,) = rendered.of_kind("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    head = rendered.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert head["initContainers"][0]["name"] == "wait-for-champions"


def test_secrets_come_from_secret_refs(helm):
    rented = CHART / "ci" / "rented-only-values.yaml"
    rendered = render(helm, values=rented)
    assert not rendered.of_kind("Secret"), "the chart renders a Secret only for its own MinIO"
    for where, spec in rendered.pod_specs():
        if not where.startswith("RayService"):
            continue
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "openai", "key": "api-key"}
        keys = next(v for v in spec["volumes"] if v["name"] == "gateway-keys")
        assert keys["secret"]["secretName"] == "aprendiz-gateway-keys"
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "gateway-keys")
        assert mount["mountPath"] + "/" + keys["secret"]["items"][0]["path"] == "/etc/aprendiz/keys/keys.yaml"


def test_helm_test_pod_calls_the_endpoints(helm):
    pod = render(helm, values=CHART / "ci" / "cpu-values.yaml").one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["BASE_URL"] == "http://aprendiz:8000"
    assert (env["CHAT_MODEL"], env["CLASSIFIER"]) == ("aprendiz-tiny-chat", "breast-cancer")
    script = (CHART / "files" / "scripts" / "helm_test.py").read_text()
    for call in ('"/v1/models"', '"/v1/chat/completions"', ":predict"):
        assert call in script


def test_notes_print_port_forward_and_curl(helm):
    result = run_helm(
        helm, "install", "aprendiz", str(CHART), "--dry-run=client", "--namespace", "aprendiz", *REQUIRED,
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n aprendiz port-forward service/aprendiz 8000:8000" in notes
    assert "curl -s http://127.0.0.1:8000/v1/chat/completions" in notes
    assert '"model": "aprendiz-tiny-chat"' in notes
    assert "curl -s http://127.0.0.1:8000/v1/models/breast-cancer:predict" in notes
    assert "helm test aprendiz -n aprendiz" in notes
