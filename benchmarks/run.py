"""Run the benchmarks and regenerate docs/benchmarks.md.

    python -m benchmarks.run --quick            # make bench-quick: a few minutes
    python -m benchmarks.run                    # make bench: everything
    python -m benchmarks.run --only replicas    # one section (head, serve-modes, replicas, batching,
                                                #   cold-start, training)

Sections and their result files (benchmarks/results/):
- head (head.json, cost-input.json): aprendiz against plain vLLM (vLLM's client, alternated),
  streaming against not, and aprendiz V1/V2 against KServe's ModelServer and in-process
  onnxruntime (alternated); cold starts of the three servers; a py-spy profile where short of target;
- serve-modes (serve-modes.json, full only): aprendiz as shipped (HAProxy ingress), with API keys, with
  Serve's Python proxy, and with that proxy plus RAY_SERVE_THROUGHPUT_OPTIMIZED, each against plain vLLM
  and KServe up in the same run;
- classifier-paths (classifier-paths.json): classifier-only platforms against KServe: the model in the
  ingress with and without API keys, with 2 ingress replicas, in a replica of its own; a model swap
  under load in the ingress; a TF-IDF text model in the ingress against MiniLM in its own replica;
- replicas (replicas.json, full only): classifier requests/s with 1, 2, 4 replicas (placement: replica);
- batching (batching.json, full only): classifier requests/s and latency per @serve.batch setting;
- token-cost (token-cost.json, full only): the CPU each process spends per streamed token, aprendiz against
  plain vLLM, and py-spy on the generator replica and the ingress;
- cold-start (cold-start.json, full only): from `aprendiz serve` to the first answer, per model kind;
- training (training.json): training job wall time and peak memory against rows;
- gc-threshold (gc-threshold.json, full only): the model in the ingress with the shipped young GC threshold
  and with Python's default, against KServe; at concurrency 1 also with the Python client.
Only one Ray cluster runs at a time; plain vLLM and KServe are idle while aprendiz is measured
and the other way round (their idle CPU use is recorded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import classifier, generator
from benchmarks.common import (
    WORK,
    cpu_by_role,
    cpu_so_far,
    recheck_idle,
    start_stages,
    summary,
    thread_cpu,
    thread_sample,
    wait_until_idle,
    write_result,
)
from benchmarks.servers import (
    MINILM_CLASSIFIER,
    MODEL_ID,
    PEER_NICENESS,
    SERVE_MODES,
    TEXT_CLASSIFIER,
    Aprendiz,
    KServeServer,
    PlainVllm,
    create_key,
    platform_config,
    prepare_store,
    prepare_text_store,
    shipped_generator,
)


def log(message: str) -> None:
    print(message, flush=True)


def plan(quick: bool) -> dict[str, Any]:
    return {
        "generator_concurrency": [1, 16] if quick else [1, 4, 16, 64],
        "generator_rounds": 3,
        "streaming_concurrency": [16] if quick else [1, 16],
        "streaming_rounds": 2 if quick else 3,
        "streaming_duration_s": 4.0 if quick else 6.0,
        "classifier_concurrency": [1, 32] if quick else [1, 8, 32, 128],
        "classifier_rounds": 3,
        "classifier_duration_s": 3.0 if quick else 5.0,
        "classifier_warmup_s": 1.0,
        "in_process_duration_s": 2.0,
        "training_rows": [1_000, 10_000] if quick else [1_000, 10_000, 100_000],
        "training_repeats": 2 if quick else 3,
        # 1M rows once, every default candidate: k-NN fits on at most 20,000 training rows
        # (max_train_rows), so its cost grows with the rows it scores, not with their square.
        "training_large_rows": [] if quick else [1_000_000],
        "training_large_repeats": 3,
        "training_large_without": [],
        # the same 1M rows with the candidates' grid points as Ray tasks on a local Ray (one run)
        "training_ray_local_rows": [] if quick else [1_000_000],
        # Parquet shards through the distributed path: Ray Data, Ray Train's XGBoostTrainer (one run each)
        "training_distributed_rows": [200_000] if quick else [1_000_000, 10_000_000],
        "training_distributed_workers": 2,
        "input_len": generator.INPUT_LEN,
        "output_len": generator.OUTPUT_LEN,
        "engine": {k: v for k, v in shipped_generator().items() if k in ("engine_kwargs", "env", "num_cpus")},
        "replicas": "1 ingress, 1 vLLM engine, classifier replicas fixed (autoscaling min = max)",
    }


def idle_cpu(servers: dict[str, Any], seconds: float = 5.0) -> dict[str, float]:
    """CPU share (of one core) each idle server uses: the background the others are measured beside."""
    before = {name: s.server.cpu_seconds() for name, s in servers.items()}
    time.sleep(seconds)
    return {name: round(100 * (s.server.cpu_seconds() - before[name]) / seconds, 1) for name, s in servers.items()}


def stop_all(*servers) -> None:
    for s in servers:
        if s is not None:
            try:
                s.stop()
            except Exception as exc:  # stopping must go on to the next one
                log(f"bench: stopping {s.server.name}: {exc}")


def on_platform(entry: dict[str, Any], what: str, config: Path, measure, *, name: str,
                serve_mode: str = "default", env: dict[str, str] | None = None) -> None:
    """Start `aprendiz serve` with ``config``, run ``measure(aprendiz)``, stop it. A failure to start or
    to measure is recorded in ``entry["error"]`` and logged, and the section goes on."""
    aprendiz = None
    try:
        aprendiz = Aprendiz(config, name=name, serve_mode=serve_mode, env=env).start()
        measure(aprendiz)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
        log(f"bench: {what} failed: {entry['error'][-500:]}")
    finally:
        stop_all(aprendiz)


def streamed_chat_ok(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A streamed chat completion through the entrance: events arrive, end with [DONE], carry usage."""
    import httpx

    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hola"}], "max_tokens": 16, "stream": True,
            "stream_options": {"include_usage": True}}
    events, done, usage = 0, False, None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers or {}, timeout=60) as r:
        status = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            events += 1
            usage = json.loads(line[6:]).get("usage") or usage
    return {"status": status, "events": events, "done": done, "usage": usage,
            "ok": status == 200 and events > 1 and done and bool(usage)}


# -- head to head ------------------------------------------------------------------------
def head(quick: bool, started: float) -> None:
    p = plan(quick)
    idle = wait_until_idle(log=log)
    store_url, onnx_bytes = prepare_store()
    model_file = WORK / "breast-cancer.onnx"
    model_file.write_bytes(onnx_bytes)
    config = platform_config(WORK / "head.yaml", store_url=store_url)
    vllm = kserve = aprendiz = None
    try:
        vllm = PlainVllm().start()
        log(f"bench: plain vLLM ready in {vllm.ready_s:.1f} s")
        kserve = KServeServer(model_file).start()
        log(f"bench: KServe ready in {kserve.ready_s:.1f} s")
        aprendiz = Aprendiz(config).start()
        log(f"bench: aprendiz ready in {aprendiz.ready_s:.1f} s")
        checks = {"aprendiz": classifier.check_answers(aprendiz.url), "kserve": classifier.check_answers(kserve.url),
                  "aprendiz_stream": streamed_chat_ok(aprendiz.url)}
        background = idle_cpu({"vllm": vllm, "kserve": kserve, "aprendiz": aprendiz})
        log(f"bench: idle CPU % of one core: {background}")
        gen_targets = {"aprendiz": (aprendiz.url, None), "vllm": (vllm.url, None)}
        for name, (url, key) in gen_targets.items():  # warm-up, not counted
            generator.one_run(url, 4, quick=True, seed=123, api_key=key)
        gen = generator.alternated(gen_targets, p["generator_concurrency"], p["generator_rounds"], quick=quick, log=log)
        gen_ratios = generator.ratios(gen, "aprendiz", "vllm")
        stream = generator.streaming(gen_targets, p["streaming_concurrency"], p["streaming_rounds"],
                                     p["streaming_duration_s"], log=log)
        short = generator.short_of_targets(gen, gen_ratios)
        profile = generator.profile_ingress(aprendiz, aprendiz.url, log=log) if short else {"skipped": "targets met"}
        clf_targets = {
            "aprendiz-v1": (classifier.endpoints(aprendiz.url)["v1"], {}),
            "aprendiz-v2": (classifier.endpoints(aprendiz.url)["v2"], {}),
            "kserve-v1": (classifier.endpoints(kserve.url)["v1"], {}),
            "kserve-v2": (classifier.endpoints(kserve.url)["v2"], {}),
        }
        clf = classifier.alternated(clf_targets, p["classifier_concurrency"], p["classifier_rounds"],
                                    duration_s=p["classifier_duration_s"], warmup_s=p["classifier_warmup_s"], log=log)
        floor = classifier.in_process(onnx_bytes, classifier.sample_row(), duration_s=p["in_process_duration_s"],
                                      rounds=p["classifier_rounds"])
        clf_profile = classifier.profile_path(aprendiz, classifier.endpoints(aprendiz.url)["v1"], log=log)
        ingress_floor = classifier.ingress_floor(aprendiz.url, p["classifier_concurrency"], p["classifier_rounds"],
                                                 duration_s=p["classifier_duration_s"], warmup_s=p["classifier_warmup_s"])
        cold = {"plain_vllm_s": vllm.ready_s, "kserve_s": kserve.ready_s, "aprendiz_generator_and_classifier_s": aprendiz.ready_s}
    finally:
        stop_all(aprendiz, vllm, kserve)
    idle = recheck_idle(idle)
    write_result("head", {
        "settings": {**p, "peer_niceness": PEER_NICENESS}, "machine_state": idle, "idle_cpu_pct_of_core": background, "checks": checks,
        "cold_start": cold,
        "generator": {"results": gen, "ratios_aprendiz_over_vllm": gen_ratios,
                      "targets": {"throughput_ratio": generator.THROUGHPUT_TARGET,
                                  "p50_ttft_delta_ms": "5 at concurrency 1, 10 % of plain vLLM's above"}},
        "streaming": stream, "profile": profile,
        "classifier": {"results": clf, "in_process": floor, "profile": clf_profile,
                       "ingress_floor": ingress_floor},
    }, mode="quick" if quick else "full", started=started)
    write_cost_input(gen, p)


def write_cost_input(gen: dict[str, Any], p: dict[str, Any]) -> Path:
    """What `aprendiz cost --benchmark benchmarks/results/cost-input.json` reads: the measured peak
    of the hosted model's one replica (prompt + completion tokens/s) and its hourly price."""
    from aprendiz.config import GeneratorModel, PlatformConfig
    from benchmarks.servers import SHIPPED_CONFIG

    best = max((c["figures"]["total_token_throughput"]["median"] or 0.0) for c in gen["aprendiz"].values())
    model = GeneratorModel.model_validate(shipped_generator())
    document = {
        "source": "benchmarks/results/head.json (aprendiz, vLLM's client, random prompts)",
        "hosted": [{
            "model": MODEL_ID,
            "replica_hourly_usd": PlatformConfig.from_yaml(SHIPPED_CONFIG).gateway.generator_hourly_usd(model),
            "tokens_per_s": best,
            "prompt_share": p["input_len"] / (p["input_len"] + p["output_len"]),
        }],
    }
    path = Path(__file__).resolve().parent / "results" / "cost-input.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- Ray Serve modes and the gateway's cost --------------------------------------------------
def serve_modes(quick: bool, started: float) -> None:
    p = plan(True)  # the short plan: two concurrencies each
    idle = wait_until_idle(log=log)
    store_url, onnx_bytes = prepare_store()
    model_file = WORK / "breast-cancer.onnx"
    model_file.write_bytes(onnx_bytes)
    keys_file = WORK / "keys.yaml"
    key = create_key(keys_file)
    variants = {
        "default": ("default", None),
        "keys": ("default", keys_file),
        "proxy": ("proxy", None),
        "throughput": ("throughput", None),
    }
    results: dict[str, Any] = {}
    vllm = kserve = None
    try:
        vllm = PlainVllm().start()
        kserve = KServeServer(model_file).start()
        for name, (mode, keys) in variants.items():
            config = platform_config(WORK / f"mode-{name}.yaml", store_url=store_url, keys_file=keys)
            entry: dict[str, Any] = {"serve_env": SERVE_MODES[mode], "keys": keys is not None}

            def measure(aprendiz, entry=entry, name=name, keys=keys) -> None:
                entry["ready_s"] = aprendiz.ready_s
                api_key = key if keys else None
                headers = {"Authorization": f"Bearer {key}"} if keys else {}
                entry["checks"] = {**classifier.check_answers(aprendiz.url, headers),
                                   "stream": streamed_chat_ok(aprendiz.url, headers)}
                log(f"bench: aprendiz {name} ready in {aprendiz.ready_s:.1f} s; checks {entry['checks']}")
                targets = {"aprendiz": (aprendiz.url, api_key), "vllm": (vllm.url, None)}
                for url, k in targets.values():
                    generator.one_run(url, 4, quick=True, seed=123, api_key=k)
                gen = generator.alternated(targets, p["generator_concurrency"], p["generator_rounds"], quick=True, log=log)
                entry["generator"] = {"results": gen, "ratios_aprendiz_over_vllm": generator.ratios(gen, "aprendiz", "vllm")}
                clf_targets = {
                    "aprendiz-v1": (classifier.endpoints(aprendiz.url)["v1"], headers),
                    "aprendiz-v2": (classifier.endpoints(aprendiz.url)["v2"], headers),
                    "kserve-v1": (classifier.endpoints(kserve.url)["v1"], {}),
                }
                entry["classifier"] = classifier.alternated(
                    clf_targets, p["classifier_concurrency"], p["classifier_rounds"],
                    duration_s=p["classifier_duration_s"], warmup_s=p["classifier_warmup_s"], log=log)

            on_platform(entry, f"serve mode {name}", config, measure, name=f"aprendiz-{name}", serve_mode=mode)
            results[name] = entry
    finally:
        stop_all(vllm, kserve)
    write_result("serve-modes", {"settings": p, "machine_state": recheck_idle(idle), "variants": results},
                 mode="quick" if quick else "full", started=started)


# -- stream batching: adaptive, fixed (Ray's), off ---------------------------------------------
def stream_batching(quick: bool, started: float) -> None:
    """The generator's ``stream_batching`` modes, one platform each, against plain vLLM in the same
    run: vLLM's client at every concurrency, alternated with plain vLLM round by round."""
    p = plan(quick)
    idle = wait_until_idle(log=log)
    store_url, _ = prepare_store()
    results: dict[str, Any] = {}
    vllm = None
    try:
        vllm = PlainVllm().start()
        for mode in ("adaptive", "fixed", "off"):
            config = platform_config(WORK / f"stream-{mode}.yaml", store_url=store_url, classifiers=(),
                                     generator_options={"stream_batching": mode})
            entry: dict[str, Any] = {"stream_batching": mode}

            def measure(aprendiz, entry=entry, mode=mode) -> None:
                entry["ready_s"] = aprendiz.ready_s
                entry["checks"] = {"stream": streamed_chat_ok(aprendiz.url)}
                targets = {"aprendiz": (aprendiz.url, None), "vllm": (vllm.url, None)}
                for url, key in targets.values():
                    generator.one_run(url, 4, quick=True, seed=123, api_key=key)
                gen = generator.alternated(targets, p["generator_concurrency"], p["generator_rounds"], quick=quick,
                                           log=log)
                entry["generator"] = {"results": gen, "ratios_aprendiz_over_vllm": generator.ratios(gen, "aprendiz",
                                                                                                    "vllm")}
                log(f"bench: stream batching {mode}: {entry['generator']['ratios_aprendiz_over_vllm']}")

            on_platform(entry, f"stream batching {mode}", config, measure, name=f"aprendiz-stream-{mode}")
            results[mode] = entry
    finally:
        stop_all(vllm)
    write_result("stream-batching", {"settings": p, "machine_state": recheck_idle(idle), "modes": results},
                 mode="quick" if quick else "full", started=started)


# -- what a token costs, process by process ----------------------------------------------------
TOKEN_COST_CONCURRENCY = (4, 16, 64)


def token_cost(quick: bool, started: float) -> None:
    """The CPU each process spends per output token under vLLM's client, aprendiz (the shipped
    generator alone) against plain vLLM, one server up at a time, alternated; then py-spy on the
    ingress and the generator replica at the highest concurrency."""
    idle_state = wait_until_idle(log=log)
    store_url, _ = prepare_store()
    config = platform_config(WORK / "token-cost.yaml", store_url=store_url, classifiers=())
    rounds = 1 if quick else 2
    results: dict[str, Any] = {"aprendiz": {str(c): [] for c in TOKEN_COST_CONCURRENCY},
                               "vllm": {str(c): [] for c in TOKEN_COST_CONCURRENCY}}
    profile: dict[str, Any] = {}
    for r in range(rounds):
        entry: dict[str, Any] = {}

        def measure(aprendiz, r=r) -> None:
            generator.one_run(aprendiz.url, 4, quick=True, seed=123)  # warm-up, not counted
            for c in TOKEN_COST_CONCURRENCY:
                run = generator.token_cost(aprendiz, aprendiz.url, c, seed=r)
                results["aprendiz"][str(c)].append(run)
                log(f"bench: token cost aprendiz c={c}: {run['cpu_ms_per_token']} CPU ms/token, "
                    f"{run['figures']['output_throughput']:.0f} tok/s")
            if r == rounds - 1:
                c = TOKEN_COST_CONCURRENCY[-1]
                profile.update(generator.profile_processes(
                    aprendiz, {"ingress": "ServeReplica:aprendiz:Ingress", "generator": "ServeReplica:aprendiz:LLMServer"},
                    lambda: generator.one_run(aprendiz.url, c, quick=False, seed=98), seconds=10, log=log,
                ), concurrency=c)

        on_platform(entry, "token cost", config, measure, name="aprendiz-token-cost")
        if "error" in entry:
            results.setdefault("errors", []).append(entry["error"])
        vllm = PlainVllm().start()
        try:
            generator.one_run(vllm.url, 4, quick=True, seed=123)
            for c in TOKEN_COST_CONCURRENCY:
                run = generator.token_cost(vllm, vllm.url, c, seed=r)
                results["vllm"][str(c)].append(run)
                log(f"bench: token cost vllm c={c}: {run['cpu_ms_per_token']} CPU ms/token, "
                    f"{run['figures']['output_throughput']:.0f} tok/s")
        finally:
            stop_all(vllm)
    write_result("token-cost", {"settings": {"rounds": rounds, "concurrency": list(TOKEN_COST_CONCURRENCY),
                                             "input_len": generator.INPUT_LEN, "output_len": generator.OUTPUT_LEN},
                                "machine_state": recheck_idle(idle_state), "results": results, "profile": profile},
                 mode="quick" if quick else "full", started=started)


# -- an idle platform's CPU, process by process ------------------------------------------------
IDLE_SETTLE_S = 20.0
IDLE_SAMPLE_S = 30.0
IDLE_THREADS = 25  # the busiest threads kept per run


def idle_sample(pids: list[int]) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """The CPU of ``pids`` over IDLE_SAMPLE_S, by kind of process and (the busiest) by thread, in one window."""
    threads = thread_sample(pids)
    by_process = cpu_by_role(pids, IDLE_SAMPLE_S)
    return by_process, thread_cpu(threads, thread_sample(pids), IDLE_SAMPLE_S)[:IDLE_THREADS]


def idle(quick: bool, started: float) -> None:
    """What an idle platform (the shipped generator and breast-cancer, no requests) spends CPU on,
    per kind of process, as shipped and with Ray's own intervals (the variables aprendiz sets for a
    local cluster unset to Ray's defaults), one platform at a time; plain vLLM's beside them."""
    from aprendiz.cli.runner import IDLE_ENV

    idle_state = wait_until_idle(log=log)
    store_url, _ = prepare_store()
    config = platform_config(WORK / "idle.yaml", store_url=store_url)
    ray_defaults = {name: default for name, (_, default) in IDLE_ENV.items()}
    variants = {"shipped": {}, "Ray's defaults": ray_defaults}
    rounds = 1 if quick else 2
    results: dict[str, Any] = {name: {"runs": []} for name in variants}
    for r in range(rounds):
        for name, env in variants.items():
            run: dict[str, Any] = {}

            def measure(aprendiz, run=run, name=name) -> None:
                generator.one_run(aprendiz.url, 4, quick=True, seed=123)  # warm, then left alone
                time.sleep(IDLE_SETTLE_S)
                run["by_process"], run["by_thread"] = idle_sample(aprendiz.server.pids())
                run["total_pct"] = round(sum(x["cpu_pct"] for x in run["by_process"].values()), 1)
                log(f"bench: idle {name}: {run['total_pct']}% of a core")

            on_platform(run, f"idle {name}", config, measure, name="aprendiz-idle", env=env)
            results[name]["runs"].append(run)
    vllm = PlainVllm().start()
    try:
        time.sleep(IDLE_SETTLE_S)
        plain, plain_threads = idle_sample(vllm.server.pids())
    finally:
        stop_all(vllm)
    for entry in results.values():
        entry["total_pct"] = summary([x["total_pct"] for x in entry["runs"] if "total_pct" in x])
    write_result("idle", {"settings": {"settle_s": IDLE_SETTLE_S, "sample_s": IDLE_SAMPLE_S, "rounds": rounds,
                                       "shipped_env": {k: v for k, (v, _) in IDLE_ENV.items()}},
                          "machine_state": recheck_idle(idle_state), "variants": results,
                          "plain_vllm": {"by_process": plain, "by_thread": plain_threads,
                                         "total_pct": round(sum(x["cpu_pct"] for x in plain.values()), 1)}},
                 mode="quick" if quick else "full", started=started)


# -- replicas and a model swap under load ---------------------------------------------------
def replicas(quick: bool, started: float) -> None:
    p = plan(quick)
    idle = wait_until_idle(log=log)
    row = classifier.sample_row()
    body = classifier.v1_body(row)
    results: dict[str, Any] = {}
    for n in (1, 2, 4):
        store_root = WORK / f"store-replicas-{n}"
        shutil.rmtree(store_root, ignore_errors=True)
        store_url, _ = prepare_store(store_root)
        config = platform_config(WORK / f"replicas-{n}.yaml", store_url=store_url, generator=False,
                                 classifier_replicas=n, classifier_options={"placement": "replica"})
        aprendiz = None
        try:
            aprendiz = Aprendiz(config, name=f"aprendiz-replicas-{n}").start()
            url = classifier.endpoints(aprendiz.url)["v1"]
            results[str(n)] = {"ready_s": aprendiz.ready_s, **classifier.closed_loop(
                url, body, concurrency=32, rounds=p["classifier_rounds"], duration_s=p["classifier_duration_s"],
                warmup_s=1.0)}
            log(f"bench: {n} classifier replicas: {results[str(n)]['rps']['median']:.0f} req/s")
        finally:
            stop_all(aprendiz)
    write_result("replicas", {"settings": p, "machine_state": recheck_idle(idle), "replicas": results,
                              "placement": "replica", "concurrency": 32}, mode="quick" if quick else "full",
                 started=started)


def model_swap(aprendiz, store_url: str, url: str, body: bytes) -> dict[str, Any]:
    """Latency before and during a champion change (the replicas poll every 5 s), and failures."""
    import threading

    import httpx

    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.config import TrainingConfig
    from aprendiz.training.dataset import seed_builtin
    from aprendiz.training.job import run_training
    from benchmarks.loadgen import http_load

    def version() -> str:
        return httpx.post(url, content=body, timeout=10).json()["predictions"][0]["model_version"]

    before = http_load(url, body, concurrency=8, duration_s=4, warmup_s=1)
    old = version()
    registry = ModelRegistry(ObjectStore(store_url))

    def promote() -> None:  # a new version from the training job (another seed), swapped in by hand
        time.sleep(1.0)
        scratch = ModelRegistry(ObjectStore(tempfile.mkdtemp(prefix="swap-store-", dir=WORK)))
        seed_builtin(scratch.store, "breast-cancer")
        trained = run_training(scratch, "breast-cancer", TrainingConfig(labels=("benign", "malignant"), seed=1))
        version = registry.import_version(scratch, "breast-cancer", trained.version)
        registry.promote("breast-cancer", version, reason="benchmark swap")

    thread = threading.Thread(target=promote)
    thread.start()
    during = http_load(url, body, concurrency=8, duration_s=12, warmup_s=0)
    thread.join()
    new = version()
    return {"before": before, "during": during, "old_version": old, "new_version": new, "swapped": new != old,
            "failed_requests": during["errors"]}


# -- where a classifier runs, keys, ingress replicas, text models ----------------------------
TEXT_ROWS = ["Hola, ¿cómo estás? Me llamo Ana.", "Hello, how are you? My name is Ana."]


def classifier_paths(quick: bool, started: float) -> None:
    """Classifier-only platforms against KServe's ModelServer, which stays up and takes turns with each:
    the model in the ingress (as placement auto puts it) with and without API keys, with 2 ingress
    replicas, and in a replica of its own; a model swap under load with the model in the ingress;
    a text model in the ingress (TF-IDF) against one in its own replica (MiniLM)."""
    p = plan(quick)
    idle = wait_until_idle(log=log)
    store_url, onnx_bytes = prepare_store(WORK / "store-paths")
    text_store = prepare_text_store()
    model_file = WORK / "breast-cancer-paths.onnx"
    model_file.write_bytes(onnx_bytes)
    keys_file = WORK / "keys-paths.yaml"
    key = create_key(keys_file)
    concurrencies = p["classifier_concurrency"]
    variants: dict[str, dict[str, Any]] = {
        "ingress": {},
        "ingress, API keys": {"keys_file": keys_file},
        "2 ingress replicas": {"ingress_replicas": 2},
        "own replica": {"classifier_options": {"placement": "replica"}},
    }
    results: dict[str, Any] = {}
    kserve = None
    try:
        kserve = KServeServer(model_file).start()
        for name, options in variants.items():
            config = platform_config(WORK / f"paths-{len(results)}.yaml", store_url=store_url, generator=False, **options)
            entry: dict[str, Any] = {"options": {k: str(v) for k, v in options.items()}}
            headers = {"Authorization": f"Bearer {key}"} if "keys_file" in options else {}

            def measure(aprendiz, entry=entry, headers=headers, name=name) -> None:
                entry["ready_s"] = aprendiz.ready_s
                entry["checks"] = classifier.check_answers(aprendiz.url, headers)
                entry["placement"] = classifier.placement_of(aprendiz.url, classifier.CLASSIFIER, headers)
                targets = {"aprendiz-v1": (classifier.endpoints(aprendiz.url)["v1"], headers),
                           "aprendiz-v2": (classifier.endpoints(aprendiz.url)["v2"], headers),
                           "kserve-v1": (classifier.endpoints(kserve.url)["v1"], {}),
                           "kserve-v2": (classifier.endpoints(kserve.url)["v2"], {})}
                entry["classifier"] = classifier.alternated(
                    targets, concurrencies, p["classifier_rounds"], duration_s=p["classifier_duration_s"],
                    warmup_s=p["classifier_warmup_s"], log=lambda m, name=name: log(f"{m} [{name}]"))
                if name == "ingress":
                    url = classifier.endpoints(aprendiz.url)["v1"]
                    entry["swap"] = model_swap(aprendiz, store_url, url, classifier.v1_body(classifier.sample_row()))
                    log(f"bench: swap in the ingress: {entry['swap']['failed_requests']} failed requests")

            on_platform(entry, f"classifier path {name}", config, measure, name="aprendiz-paths")
            results[name] = entry
    finally:
        stop_all(kserve)
    batching_in_ingress = classifier.ingress_batching(store_url)
    log(f"bench: in the ingress, inline against @serve.batch (µs a request): {batching_in_ingress}")
    text: dict[str, Any] = {}
    config = platform_config(WORK / "paths-text.yaml", store_url=text_store, generator=False,
                             classifiers=(TEXT_CLASSIFIER, MINILM_CLASSIFIER))

    def measure_text(aprendiz) -> None:
        body = json.dumps({"instances": TEXT_ROWS[:1]}).encode()
        for model in (TEXT_CLASSIFIER, MINILM_CLASSIFIER):
            text[model] = {"placement": classifier.placement_of(aprendiz.url, model)}
        targets = {model: (f"{aprendiz.url}/v1/models/{model}:predict", {}) for model in (TEXT_CLASSIFIER, MINILM_CLASSIFIER)}
        text["results"] = classifier.alternated(targets, [1, 8], p["classifier_rounds"], body=body,
                                                duration_s=p["classifier_duration_s"], warmup_s=p["classifier_warmup_s"],
                                                log=log)

    on_platform(text, "text classifiers", config, measure_text, name="aprendiz-text")
    write_result("classifier-paths", {"settings": {**p, "concurrency": concurrencies}, "machine_state": recheck_idle(idle),
                                      "variants": results, "text": text, "ingress_batching": batching_in_ingress},
                 mode="quick" if quick else "full", started=started)


# -- the ingress's garbage collector ------------------------------------------------------------
GC_VARIANTS = {"50000 (shipped)": {}, "700 (Python's default)": {"gc_young_threshold": None}}


def gc_threshold(quick: bool, started: float) -> None:
    """The model in the ingress with the shipped young GC threshold and with Python's, each against
    KServe's ModelServer taking turns; at concurrency 1 also with the Python client, a second
    opinion on wrk's tail there."""
    from benchmarks.loadgen import http_post_factory, run_closed_loop

    p = plan(quick)
    idle = wait_until_idle(log=log)
    store_url, onnx_bytes = prepare_store(WORK / "store-gc")
    model_file = WORK / "breast-cancer-gc.onnx"
    model_file.write_bytes(onnx_bytes)
    concurrencies = [1, 32]
    results: dict[str, Any] = {}
    kserve = None
    try:
        kserve = KServeServer(model_file).start()
        for name, options in GC_VARIANTS.items():
            config = platform_config(WORK / f"gc-{len(results)}.yaml", store_url=store_url, generator=False,
                                     ingress_options=options)
            entry: dict[str, Any] = {"ingress_options": options}

            def measure(aprendiz, entry=entry, name=name) -> None:
                entry["checks"] = classifier.check_answers(aprendiz.url)
                urls = {"aprendiz": classifier.endpoints(aprendiz.url), "kserve": classifier.endpoints(kserve.url)}
                targets = {f"{server}-{proto}": (u[proto], {}) for server, u in urls.items() for proto in ("v1", "v2")}
                entry["classifier"] = classifier.alternated(
                    targets, concurrencies, p["classifier_rounds"], duration_s=p["classifier_duration_s"],
                    warmup_s=p["classifier_warmup_s"], log=lambda m, name=name: log(f"{m} [gc {name}]"))
                body = classifier.v1_body(classifier.sample_row())
                entry["python_client_c1"] = {
                    server: classifier.summarize_runs([
                        run_closed_loop(http_post_factory(u["v1"], body), concurrency=1,
                                        duration_s=p["classifier_duration_s"], warmup_s=p["classifier_warmup_s"])
                        | {"tool": "python-httpx"} for _ in range(p["classifier_rounds"])])
                    for server, u in urls.items()}

            on_platform(entry, f"gc threshold {name}", config, measure, name="aprendiz-gc")
            results[name] = entry
    finally:
        stop_all(kserve)
    write_result("gc-threshold", {"settings": {**p, "concurrency": concurrencies}, "machine_state": recheck_idle(idle),
                                  "variants": results}, mode="quick" if quick else "full", started=started)


# -- @serve.batch settings --------------------------------------------------------------------
BATCH_SETTINGS = [  # (max_batch_size, batch_wait_timeout_s); the shipped default is (64, 0): no wait
    (1, 0.0),
    (64, 0.0),
    (64, 0.002),
    (64, 0.01),
]


def batching(quick: bool, started: float) -> None:
    """Classifier V1 requests/s and latency for each @serve.batch setting, a fresh classifier-only
    platform each, at a low and a high concurrency."""
    p = plan(quick)
    idle = wait_until_idle(log=log)
    store_url, _ = prepare_store(WORK / "store-batching")
    body = classifier.v1_body(classifier.sample_row())
    concurrencies = [1, 32]
    results: dict[str, Any] = {}
    for size, wait_s in BATCH_SETTINGS:
        name = f"{size}/{wait_s * 1000:g}ms"
        config = platform_config(WORK / f"batch-{size}-{wait_s}.yaml", store_url=store_url, generator=False,
                                 classifier_options={"max_batch_size": size, "batch_wait_timeout_s": wait_s,
                                                     "placement": "replica"})
        entry: dict[str, Any] = {"max_batch_size": size, "batch_wait_timeout_s": wait_s}

        def measure(aprendiz, entry=entry, name=name) -> None:
            url = classifier.endpoints(aprendiz.url)["v1"]
            for c in concurrencies:
                entry[str(c)] = classifier.closed_loop(url, body, concurrency=c, rounds=p["classifier_rounds"],
                                                       duration_s=p["classifier_duration_s"], warmup_s=1.0)
                log(f"bench: batch {name} c={c}: {entry[str(c)]['rps']['median']:.0f} req/s")

        on_platform(entry, f"batch {name}", config, measure, name=f"aprendiz-batch-{size}-{wait_s * 1000:g}ms")
        results[name] = entry
    write_result("batching", {"settings": {**p, "concurrency": concurrencies}, "machine_state": recheck_idle(idle),
                              "batching": results}, mode="quick" if quick else "full", started=started)


# -- cold start per model kind ------------------------------------------------------------------
def first_answer(kind: str, url: str, deadline_s: float = 300) -> float:
    """Seconds until the model answers its first request (200), polled every 0.2 s."""
    import httpx



    if kind == "generator":
        method = ("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hola"}],
                                           "max_tokens": 4})
    elif kind == "text-classifier":
        method = (f"/v1/models/{TEXT_CLASSIFIER}:predict", {"instances": ["Hola, ¿cómo estás?"]})
    else:
        method = (f"/v1/models/{classifier.CLASSIFIER}:predict", {"instances": [classifier.sample_row()]})
    begin = time.monotonic()
    while time.monotonic() - begin < deadline_s:
        try:
            if httpx.post(url + method[0], json=method[1], timeout=60).status_code == 200:
                return time.monotonic() - begin
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{kind}: no answer within {deadline_s} s")


def cold_start(quick: bool, started: float) -> None:
    """From `aprendiz serve` to the first answer, one platform per model kind, each started twice."""


    idle = wait_until_idle(log=log)
    store_url, _ = prepare_store(WORK / "store-cold", text=True)
    kinds = {
        "classifier": {"generator": False},
        "text-classifier": {"generator": False, "classifiers": (TEXT_CLASSIFIER,)},
        "generator": {"generator": True, "classifiers": ()},
    }
    repeats = 1 if quick else 2
    results: dict[str, Any] = {}
    for kind, options in kinds.items():
        config = platform_config(WORK / f"cold-{kind}.yaml", store_url=store_url, **options)
        runs = []
        for i in range(repeats):
            run: dict[str, Any] = {}

            def measure(aprendiz, run=run, kind=kind, i=i) -> None:
                run.update(ready_s=aprendiz.ready_s, first_answer_s=aprendiz.ready_s + first_answer(kind, aprendiz.url),
                           stages=start_stages(aprendiz.server.log_path.read_text(errors="replace"),
                                               aprendiz.server.started_at),
                           cpu_s=cpu_so_far(aprendiz.server.pids()))
                log(f"bench: cold start {kind} {i + 1}/{repeats}: ready {aprendiz.ready_s:.1f} s, "
                    f"first answer {run['first_answer_s']:.1f} s")

            on_platform(run, f"cold start {kind}", config, measure, name=f"aprendiz-cold-{kind}")
            runs.append(run)
        ok = [r for r in runs if "error" not in r]
        results[kind] = {"ready_s": summary([r["ready_s"] for r in ok]),
                         "first_answer_s": summary([r["first_answer_s"] for r in ok]), "runs": runs}
    results["plain-vllm"] = plain_vllm_cold_start(repeats)
    write_result("cold-start", {"settings": {"repeats": repeats}, "machine_state": recheck_idle(idle),
                                "kinds": results}, mode="quick" if quick else "full", started=started)


def plain_vllm_cold_start(repeats: int) -> dict[str, Any]:
    """The same checkpoint and engine settings under vLLM's own server, from its start to the first
    answer: the floor the generator's start is compared with, on the same machine in the same run."""
    runs = []
    for i in range(repeats):
        run: dict[str, Any] = {}
        vllm = None
        try:
            vllm = PlainVllm(name="vllm-cold").start()
            run.update(ready_s=vllm.ready_s, first_answer_s=vllm.ready_s + first_answer("generator", vllm.url),
                       cpu_s=cpu_so_far(vllm.server.pids()))
            log(f"bench: cold start plain vLLM {i + 1}/{repeats}: first answer {run['first_answer_s']:.1f} s")
        except Exception as exc:
            run["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
            log(f"bench: cold start plain vLLM failed: {run['error'][-500:]}")
        finally:
            if vllm is not None:
                vllm.stop()
        runs.append(run)
    ok = [r for r in runs if "error" not in r]
    return {"ready_s": summary([r["ready_s"] for r in ok]), "first_answer_s": summary([r["first_answer_s"] for r in ok]),
            "runs": runs}


def training(quick: bool, started: float) -> None:
    from benchmarks import training as tr

    p = plan(quick)
    idle = wait_until_idle(log=log)
    rows = tr.measure(p["training_rows"], p["training_repeats"], log=log)
    rows.update(tr.measure(p["training_large_rows"], p["training_large_repeats"], log=log,
                           without=tuple(p["training_large_without"])))
    ray_local = tr.measure(p["training_ray_local_rows"], 1, log=log, extra=("--ray", "local"))
    workers = p["training_distributed_workers"]
    distributed = tr.measure(p["training_distributed_rows"], 1, log=log, extra=("--distributed", str(workers)))
    write_result("training", {"settings": {"rows": p["training_rows"], "repeats": p["training_repeats"],
                                           "features": tr.FEATURES, "large_rows": p["training_large_rows"],
                                           "large_repeats": p["training_large_repeats"],
                                           "large_without": p["training_large_without"],
                                           "distributed_workers": workers, "shard_rows": tr.SHARD_ROWS},
                              "machine_state": recheck_idle(idle), "rows": rows, "ray_local": ray_local,
                              "distributed": distributed},
                 mode="quick" if quick else "full", started=started)


SECTIONS = {"head": head, "classifier-paths": classifier_paths, "serve-modes": serve_modes,
            "stream-batching": stream_batching, "idle": idle, "token-cost": token_cost, "replicas": replicas,
            "batching": batching, "cold-start": cold_start, "training": training, "gc-threshold": gc_threshold}
QUICK = ("head", "classifier-paths", "training")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer concurrencies and runs, head and training only")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    sections = args.only or (list(QUICK) if args.quick else list(SECTIONS))
    WORK.mkdir(parents=True, exist_ok=True)
    for name in sections:
        log(f"bench: section {name} ({'quick' if args.quick else 'full'})")
        SECTIONS[name](args.quick, time.time())
    from benchmarks.report import write_report

    log(f"bench: wrote {write_report()}")


if __name__ == "__main__":
    main()
