"""The ``aprendiz`` command line."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="aprendiz: model serving on Ray Serve.")


def _registry(store):
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    return ModelRegistry(ObjectStore(store.url, storage_options=store.storage_options()))


def _platform(path: Path):
    from aprendiz.config import ConfigError, PlatformConfig

    try:
        return PlatformConfig.from_yaml(path)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None


ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="Platform config file.")]


def _settings(**overrides):
    from aprendiz.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Platform config file.")] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address of the HTTP proxy.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port of the HTTP proxy.")] = None,
) -> None:
    """Serve the configured models on Ray Serve until Ctrl-C."""
    from aprendiz.cli.runner import (
        ExposureError,
        PortTakenError,
        check_exposure,
        check_ports,
        serve_ingress,
        serve_until_stopped,
    )

    settings = _settings(config_file=config, host=host, port=port)
    platform = _platform(settings.config_file)
    try:
        check_exposure(settings, platform)
        check_ports(settings, serve_ingress(settings)[1])
    except (ExposureError, PortTakenError) as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    problems = [
        f"model {m.id!r}: {m.source} does not exist (the default model is built by `aprendiz build-default-model`)"
        for m in platform.generators
        if "://" not in m.source and m.source.startswith("/") and not Path(m.source).exists()
    ]
    problems += [
        f"embedding model {e.id!r}: {e.source} does not exist (the default is built by `aprendiz build-embedding-model`)"
        for e in platform.embeddings
        if not Path(e.source).exists()
    ]
    for classifier in platform.classifiers:
        if _registry(platform.store_for(classifier)).champion(classifier.name) is None:
            problems.append(
                f"classifier {classifier.name!r} has no champion in {platform.store_for(classifier).url}"
                f" (train it: `aprendiz train --model {classifier.name}`)"
            )
    for problem in problems:
        typer.echo(f"aprendiz: {problem}", err=True)
    if problems:
        raise typer.Exit(2)
    serve_until_stopped(settings, platform, announce=lambda text: typer.echo(text))
    # The process ends here: the interpreter's final collection would walk the whole heap that
    # vLLM's and torch's imports made (3 s of a Ctrl-C); frozen objects are left to the exit.
    gc.freeze()


@app.command("build-default-model")
def build_default_model(
    output: Annotated[Optional[Path], typer.Option(help="Output folder (default: <model_dir>/aprendiz-tiny-chat).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a finished build is there.")] = False,
    max_seconds: Annotated[Optional[float], typer.Option(help="Stop training after this many seconds (a quicker, weaker model; unset: all its steps).")] = None,
) -> None:
    """Train the embedded default generator (a tiny Llama) from the shipped corpus, offline."""
    from dataclasses import replace

    from aprendiz.training.tinyllm.build import TinyLlmSpec, build, is_built

    settings = _settings()
    target = output or settings.default_model_path
    if is_built(target) and not force:
        typer.echo(f"aprendiz: default model already built at {target}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    spec = TinyLlmSpec() if max_seconds is None else replace(TinyLlmSpec(), max_seconds=max_seconds)
    typer.echo(f"aprendiz: training the default model into {target} ({spec.max_steps} steps, about 4 min on 2 cores)")
    report = build(target, spec)
    typer.echo(json.dumps({k: report[k] for k in ("parameters", "steps", "final_loss", "total_seconds")}))


@app.command("build-embedding-model")
def build_embedding_model_cmd(
    output: Annotated[Path, typer.Option(help="Output folder (model.onnx, tokenizer.json, embedding.json).")],
    force: Annotated[bool, typer.Option(help="Rebuild even if a finished build is there.")] = False,
) -> None:
    """Export the default embedding model (all-MiniLM-L6-v2, from an installed package) to ONNX, offline."""
    from aprendiz.training.embedder import build_embedding_model, is_built

    if is_built(output) and not force:
        typer.echo(f"aprendiz: embedding model already built at {output}")
        return
    typer.echo(json.dumps(build_embedding_model(output)))


@app.command("build-tiny-family")
def build_tiny_family_cmd(
    family: Annotated[str, typer.Option("--family", help="flor (BloomForCausalLM) or gpt-neox (GPTNeoXForCausalLM).")],
    output: Annotated[Path, typer.Option(help="Output folder (a Hugging Face checkpoint).")],
) -> None:
    """Write a tiny random checkpoint of a generator family (tests serve every family with these)."""
    from aprendiz.training.tinyllm.families import build_tiny_family

    try:
        typer.echo(json.dumps(build_tiny_family(family, output)))
    except ValueError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("build-tiny-adapter")
def build_tiny_adapter_cmd(
    output: Annotated[Path, typer.Option(help="Output folder (a peft adapter).")],
    seed: Annotated[int, typer.Option(help="Seed: different seeds give different adapters.")] = 1,
    base: Annotated[Optional[Path], typer.Option(help="Base checkpoint (default: the default model).")] = None,
) -> None:
    """Write a tiny random LoRA adapter (rank 8 on q_proj and v_proj) for a Llama checkpoint."""
    from aprendiz.training.tinyllm.lora import build_tiny_adapter

    typer.echo(json.dumps(build_tiny_adapter(base or _settings().default_model_path, output, seed=seed)))


@app.command("publish-adapter")
def publish_adapter(
    model: Annotated[str, typer.Option("--model", "-m", help="The base generator's id in the config.")],
    name: Annotated[str, typer.Option("--name", help="Adapter name: clients call <model>:<name>.")],
    path: Annotated[Path, typer.Option("--path", help="The peft adapter folder (adapter_config.json, weights).")],
    config: ConfigOption = None,
) -> None:
    """Copy a LoRA adapter into the model's adapter store (loras/<model>/<name>/); replicas load it on demand."""
    from aprendiz.loras import AdapterStore
    from aprendiz.store import ObjectStore

    platform = _platform(config or _settings().config_file)
    generator = next((g for g in platform.generators if g.id == model), None)
    if generator is None or generator.lora is None:
        typer.echo(f"aprendiz: {model!r} is not a generator with a lora block in the config", err=True)
        raise typer.Exit(2)
    store = platform.lora_store_for(generator)
    try:
        keys = AdapterStore(ObjectStore(store.url, storage_options=store.storage_options())).publish(model, name, path)
    except ValueError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"aprendiz: published {model}:{name} ({len(keys)} files) to {store.url}/loras/{model}/{name}/")


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="Platform config file.")]) -> None:
    """Validate a platform config file and print it as resolved."""
    typer.echo(_platform(config).model_dump_json(indent=2))


def _model_store(model: str, config: Optional[Path]):
    """The store config of ``model``'s datasets and versions: its classifier's, else the
    platform's; exit 2 on a bad model name or config."""
    from aprendiz.registry import check_name

    try:
        check_name(model)
    except ValueError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    platform = _platform(config or _settings().config_file)
    return next((platform.store_for(c) for c in platform.classifiers if c.name == model), platform.store)


@app.command("train")
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name: reads datasets/<name>/ and feedback/<name>/.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Platform config file (its store is used).")] = None,
    pushgateway: Annotated[
        Optional[str], typer.Option("--pushgateway", help="Prometheus Pushgateway URL for the run's metrics.")
    ] = None,
    ray: Annotated[
        Optional[str], typer.Option("--ray", help="Fit every candidate's grid points as Ray tasks: 'local' starts a "
                                    "Ray here for the run, 'auto' joins the cluster this runs in (a RayJob's), or a "
                                    "cluster address. Unset: in this process, one after the other. A model whose "
                                    "training.yaml sets 'distributed' always trains on Ray (unset: 'local').")
    ] = None,
) -> None:
    """Train the candidates on the store's dataset and feedback, evaluate them against the champion,
    and publish and promote the best when it beats the champion by the configured margin."""
    from aprendiz.training.dataset import DatasetError, seed_builtin
    from aprendiz.training.job import TrainingError, run_training
    from aprendiz.training.parallel import RayRunner

    store = _model_store(model, config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        registry = _registry(store)
        written = seed_builtin(registry.store, model)
        if written:
            typer.echo(f"aprendiz: wrote {written} to {store.url}/datasets/{model}/")
        runner = RayRunner(ray) if ray else None
        result = run_training(registry, model, pushgateway=pushgateway, runner=runner)
    except (TrainingError, DatasetError, ValueError) as exc:
        typer.echo(f"aprendiz: training {model} failed: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # anything else is a failure too, said plainly
        typer.echo(f"aprendiz: training {model} failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    columns = ("roc_auc", "pr_auc", "f1", "precision", "recall", "recall_at_precision", "brier", "latency_ms", "size_bytes")
    typer.echo(f"{'candidate':<24}" + "".join(f"{c:>20}" for c in columns))
    for row in result.candidates:
        if row["error"]:
            typer.echo(f"{row['name']:<24}  failed: {row['error']}")
            continue
        cells = "".join(f"{row['metrics'][c]:>20.4f}" if c != "size_bytes" else f"{row['metrics'][c]:>20.0f}" for c in columns)
        typer.echo(f"{row['name']:<24}{cells}")
    if result.champion_metrics:
        cells = "".join(f"{result.champion_metrics.get(c, float('nan')):>20.4f}" for c in columns[:-2])
        typer.echo(f"{'champion':<24}{cells}")
    typer.echo(
        f"rows read {result.rows_read}, quarantined {result.rows_quarantined}"
        + (f" ({result.quarantine_key})" if result.quarantine_key else "")
        + f", used {result.rows_used}; split {result.split}; {result.duration_s:.1f} s"
    )
    verdict = f"promoted {result.version}" if result.promoted else "not promoted"
    for row in result.candidates:
        if row["note"]:
            typer.echo(f"{row['name']}: {row['note']}")
    if result.unlabelled_effect:
        typer.echo(f"unlabelled images: {result.unlabelled_effect}")
    if runner is not None and runner.nodes:
        typer.echo(f"candidates trained as Ray tasks on {len(runner.nodes)} node(s)")
    typer.echo(f"aprendiz: {model}: best {result.best_candidate}; {verdict}: {result.reason}")
    typer.echo(f"report: {result.report_url}")


datasets_app = typer.Typer(no_args_is_help=True, help="Training datasets in the store (datasets/<model>/).")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("push")
def datasets_push(
    file: Annotated[Path, typer.Argument(
        help="A CSV, Parquet or JSON Lines file; or a folder of images (a folder per label, or a labels.csv).",
        exists=True)],
    model: Annotated[str, typer.Option("--model", "-m", help="The model it trains: stored as datasets/<model>/<file name>.")],
    config: ConfigOption = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a file of the same name.")] = False,
) -> None:
    """Upload a data file for ``aprendiz train --model MODEL`` (it reads every data file of the folder),
    or a folder of images (PNG and JPEG files and labels.csv, under their paths relative to it)."""
    from aprendiz.training.dataset import CSV_SUFFIXES, JSONL_SUFFIXES, PARQUET_SUFFIXES

    if file.is_dir():
        _push_images(file, model, config, replace)
        return

    if not file.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES):
        typer.echo(f"aprendiz: {file.name} is not CSV, Parquet or JSON Lines "
                   f"(by its suffix: {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES)})", err=True)
        raise typer.Exit(2)
    store = _registry(_model_store(model, config)).store
    key = f"datasets/{model}/{file.name}"
    if store.exists(key) and not replace:
        typer.echo(f"aprendiz: {store.url}/{key} exists already; --replace overwrites it", err=True)
        raise typer.Exit(1)
    store.write_bytes(key, file.read_bytes())
    typer.echo(f"aprendiz: wrote {file.stat().st_size:,} bytes to {store.url}/{key}")
    typer.echo(f"next: aprendiz datasets describe {model}   then   aprendiz train --model {model}")


def _push_images(folder: Path, model: str, config: Optional[Path], replace: bool) -> None:
    from aprendiz.training.images import IMAGE_SUFFIXES

    files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES
                                                                     or p.relative_to(folder).as_posix() == "labels.csv"))
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        typer.echo(f"aprendiz: {folder} holds no PNG or JPEG file (a folder per label, or labels.csv beside them)", err=True)
        raise typer.Exit(2)
    store = _registry(_model_store(model, config)).store
    keys = {p: f"datasets/{model}/{p.relative_to(folder).as_posix()}" for p in files}
    taken = [key for key in keys.values() if store.exists(key)]
    if taken and not replace:
        typer.echo(f"aprendiz: {len(taken)} files exist already (e.g. {store.url}/{taken[0]}); --replace overwrites them",
                   err=True)
        raise typer.Exit(1)
    for path, key in keys.items():
        store.write_bytes(key, path.read_bytes())
    typer.echo(f"aprendiz: wrote {len(keys):,} files to {store.url}/datasets/{model}/")
    typer.echo(f"next: aprendiz datasets describe {model}   then   aprendiz train --model {model}")


@datasets_app.command("describe")
def datasets_describe(
    model: Annotated[str, typer.Argument(help="Model name: reads datasets/<model>/ and feedback/<model>/.")],
    config: ConfigOption = None,
) -> None:
    """What a training run would read: schema, label balance, missing values, the rows it would quarantine."""
    from aprendiz.training.dataset import DatasetError
    from aprendiz.training.describe import describe_dataset, format_description

    store = _registry(_model_store(model, config)).store
    try:
        description = describe_dataset(store, model)
    except (DatasetError, ValueError) as exc:
        typer.echo(f"aprendiz: {model}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_description(description))


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the gateway (stored hashed in the key file).")
app.add_typer(keys_app, name="keys")

KeyFileOption = Annotated[
    Optional[Path], typer.Option("--file", "-f", help="Key file (default: gateway.keys_file of the config file).")
]


def _key_file(file: Optional[Path], config: Optional[Path]):
    from aprendiz.keys import KeyFile

    if file is not None:
        return KeyFile(file)
    platform = _platform(config or _settings().config_file)
    if not platform.gateway.keys_file:
        typer.echo("aprendiz: the config sets no gateway.keys_file; pass --file", err=True)
        raise typer.Exit(2)
    return KeyFile(platform.gateway.keys_file)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The tenant this key belongs to (metrics and logs show it).")],
    model: Annotated[
        Optional[list[str]], typer.Option("--model", "-m", help="A model it may call (glob; repeat). Default: all.")
    ] = None,
    rpm: Annotated[Optional[int], typer.Option("--rpm", min=1, help="Requests per minute (default: unlimited).")] = None,
    tpm: Annotated[Optional[int], typer.Option("--tpm", min=1, help="Tokens per minute (default: unlimited).")] = None,
    feedback: Annotated[bool, typer.Option(
        "--feedback", help="It may also post feedback (labelled examples that become training data).")] = False,
    file: KeyFileOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    from aprendiz.keys import KeyFileError

    keys = _key_file(file, config)
    try:
        key, record = keys.create(name, models=model, requests_per_minute=rpm, tokens_per_minute=tpm, feedback=feedback)
    except (KeyFileError, ValueError) as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(key)
    typer.echo(
        f"aprendiz: key {record.id} for {record.name} added to {keys.path} (models {record.models}, "
        f"rpm {record.requests_per_minute or 'unlimited'}, tpm {record.tokens_per_minute or 'unlimited'}, "
        f"feedback {'allowed' if record.feedback else 'not allowed'}); it is shown only now",
        err=True,
    )


@keys_app.command("list")
def keys_list(file: KeyFileOption = None, config: ConfigOption = None) -> None:
    """List the keys (never the keys themselves)."""
    from aprendiz.keys import KeyFileError

    keys = _key_file(file, config)
    try:
        records = keys.read()
    except KeyFileError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{'id':<10}{'name':<24}{'models':<32}{'rpm':>8}{'tpm':>10}  {'feedback':<10}{'created':<26}status")
    for k in records:
        status = f"revoked {k.revoked}" if k.revoked else "active"
        typer.echo(
            f"{k.id:<10}{k.name:<24}{','.join(k.models):<32}{k.requests_per_minute or '-':>8}"
            f"{k.tokens_per_minute or '-':>10}  {'yes' if k.feedback else 'no':<10}{k.created:<26}{status}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or tenant name (every active key of that name).")],
    file: KeyFileOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke keys; running gateways stop accepting them within gateway.keys_reload_s."""
    from aprendiz.keys import KeyFileError

    keys = _key_file(file, config)
    try:
        revoked = keys.revoke(key)
    except KeyFileError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    for k in revoked:
        typer.echo(f"aprendiz: revoked key {k.id} of {k.name}")


@app.command("cost")
def cost(
    prometheus: Annotated[
        Optional[str], typer.Option("--prometheus", help="Prometheus URL that scrapes the platform.")
    ] = None,
    benchmark: Annotated[
        Optional[Path], typer.Option("--benchmark", help="A benchmark result file with hosted throughputs.")
    ] = None,
    window: Annotated[str, typer.Option(help="Prometheus window for throughput and observed cost.")] = "1h",
    config: ConfigOption = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG of cost per day against volume.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Rent or host: hosted cost per million tokens at measured throughput, rented prices, break-even volume."""
    from aprendiz import costs

    if (prometheus is None) == (benchmark is None):
        typer.echo("aprendiz: give exactly one of --prometheus URL or --benchmark FILE", err=True)
        raise typer.Exit(2)
    platform = _platform(config or _settings().config_file)
    try:
        if prometheus:
            hosted, observed = costs.from_prometheus(costs.PrometheusReader(prometheus), window)
        else:
            assert benchmark is not None  # exactly one of the two, checked above
            hosted, observed = costs.from_benchmark(benchmark), {}
    except costs.CostError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(1) from None
    upkeep = platform.gateway.hosting_upkeep_usd_per_month
    hosted = [dataclasses.replace(h, upkeep_usd_per_month=upkeep) for h in hosted]
    rented = costs.rented_figures(platform, observed)
    typer.echo(json.dumps(costs.as_dict(hosted, rented), indent=2) if as_json else costs.report(hosted, rented))
    if plot:
        typer.echo(f"aprendiz: wrote {costs.plot(hosted, rented, plot)}")


@app.command("evaluate")
def evaluate(
    eval_name: Annotated[str, typer.Option("--eval", "-e", help="Evaluation set: evals/<name>/cases.jsonl in the store "
                                           "(the shipped customer-service set is written there when missing).")],
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated model ids as clients name them: hosted "
                                        "models, <model>:<adapter> adapters, rented models.")],
    judge: Annotated[Optional[str], typer.Option("--judge", help="A model (hosted or rented) that grades the "
                                                 "answers against the cases' rubrics.")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="The platform's entrance (unset: APRENDIZ_HOST and "
                                               "APRENDIZ_PORT, the local `aprendiz serve`).")] = None,
    config: ConfigOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder of the run's results and report; "
                                                   "a run resumes there (unset: var/evals/<eval>).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Cases in flight per model.")] = 8,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only N cases, spread evenly over the set (after --tag).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Only cases with this tag, as key=value "
                                                     "(repeatable).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Forget the results already in --output.")] = False,
    pushgateway: Annotated[Optional[str], typer.Option("--pushgateway", help="Prometheus Pushgateway URL for "
                                                       "the figures.")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Copy the report to the store "
                                          "(evals/<eval>/reports/<time>/).")] = True,
) -> None:
    """Score models on the same conversations through the platform's entrance: quality, latency and cost
    per 1,000 conversations, the Pareto front, and what to rent or host at which budget."""
    from aprendiz.evaluation.cases import EvalError, load_cases, select
    from aprendiz.evaluation.job import run_evaluation, table
    from aprendiz.evaluation.runner import Entrance
    from aprendiz.store import ObjectStore

    settings = _settings(config_file=config)
    platform = _platform(settings.config_file)
    names = [m.strip() for m in models.split(",") if m.strip()]
    tags = dict(t.split("=", 1) for t in tag or [] if "=" in t)
    if not names or len(tags) != len(tag or []):
        typer.echo("aprendiz: --models needs at least one model id; --tag takes key=value", err=True)
        raise typer.Exit(2)
    store = ObjectStore(platform.store.url, storage_options=platform.store.storage_options())
    try:
        cases = select(load_cases(store, eval_name), tags, limit)
    except EvalError as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    if not cases:
        typer.echo(f"aprendiz: no case of {eval_name!r} has the tags {tags}", err=True)
        raise typer.Exit(2)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    entrance = Entrance(url or f"http://{settings.host}:{settings.port}", key)
    outcome = run_evaluation(
        eval_name, cases, names, entrance, output or Path("var/evals") / eval_name, config=platform, judge=judge,
        concurrency=concurrency, fresh=fresh, store=store if publish else None, pushgateway=pushgateway,
    )
    typer.echo(table(outcome.models))
    if outcome.agreement is not None:
        agreement = outcome.agreement.get("agreement")
        typer.echo(f"judge {judge}: agrees with the pass/fail scorers on "
                   f"{'-' if agreement is None else f'{agreement:.3f}'} of {outcome.agreement['cases']} cases")
    for line in outcome.recommendation:
        typer.echo(f"- {line}")
    typer.echo(f"report: {outcome.report_path}" + (f" (published: {outcome.published})" if outcome.published else ""))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
