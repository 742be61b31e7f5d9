"""The ``aprendiz`` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="aprendiz: model serving on Ray Serve.")


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
    from aprendiz.config import ConfigError, PlatformConfig
    from aprendiz.runner import serve_until_stopped

    settings = _settings(config_file=config, host=host, port=port)
    try:
        platform = PlatformConfig.from_yaml(settings.config_file)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    for model in platform.generators:
        if "://" not in model.source and model.source.startswith("/") and not Path(model.source).exists():
            typer.echo(
                f"aprendiz: model {model.id!r}: {model.source} does not exist"
                " (the default model is built by `aprendiz build-default-model`)",
                err=True,
            )
            raise typer.Exit(2)
    serve_until_stopped(settings, platform, announce=lambda text: typer.echo(text))


@app.command("build-default-model")
def build_default_model(
    output: Annotated[Optional[Path], typer.Option(help="Output folder (default: <model_dir>/aprendiz-tiny-chat).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a finished build is there.")] = False,
    max_seconds: Annotated[Optional[float], typer.Option(help="Training time budget in seconds.")] = None,
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
    typer.echo(f"aprendiz: training the default model into {target} (about {spec.max_seconds:.0f} s on 2 cores)")
    report = build(target, spec)
    typer.echo(json.dumps({k: report[k] for k in ("parameters", "steps", "final_loss", "total_seconds")}))


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="Platform config file.")]) -> None:
    """Validate a platform config file and print it as resolved."""
    from aprendiz.config import ConfigError, PlatformConfig

    try:
        platform = PlatformConfig.from_yaml(config)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"aprendiz: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(platform.model_dump_json(indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
