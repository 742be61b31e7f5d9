"""``build_app(args)``: the Serve application, from the platform config as plain data.

The same builder serves Python (``aprendiz serve``) and Serve config files alike::

    applications:
      - name: aprendiz
        route_prefix: /
        import_path: aprendiz.services.app:build_app
        args: {generators: [...], ingress: {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve.deployment import Application

from aprendiz.config import PlatformConfig
from aprendiz.services.classifier.deployment import build_classifier_deployment, registry_for
from aprendiz.services.classifier.placement import place
from aprendiz.services.embedder.deployment import build_embedding_deployment
from aprendiz.services.generator.deployment import build_generator_deployments
from aprendiz.services.ingress.deployment import build_ingress


def build_platform(config: PlatformConfig, *, engine_cls: type | None = None) -> Application:
    """The whole application: generator, embedding and classifier deployments behind the ingress
    (light classifiers in the ingress itself: services/classifier/placement.py)."""
    lora_stores = {g.id: store for g in config.generators if (store := config.lora_store_for(g)) is not None}
    deployments, llm_configs = build_generator_deployments(
        config.generators, prices=config.gateway, lora_stores=lora_stores, engine_cls=engine_cls
    )
    placements = {c.name: place(c, registry_for(config.store_for(c))) for c in config.classifiers}
    classifiers = {
        c.name: build_classifier_deployment(
            c, config.store_for(c), hourly_usd=config.gateway.classifier_hourly_usd(c),
            access_log=config.ingress.access_log, gc_young_threshold=config.ingress.gc_young_threshold,
        )
        for c in config.classifiers
        if placements[c.name].where == "replica"
    }
    embedders = {
        e.id: build_embedding_deployment(e, hourly_usd=config.gateway.classifier_hourly_usd(e),
                                         access_log=config.ingress.access_log)
        for e in config.embeddings
    }
    return build_ingress(deployments, llm_configs, classifiers, placements, config, embedders)


def build_app(args: dict[str, Any]) -> Application:
    """Validate ``args`` as a PlatformConfig and build the application.

    ``args`` is either the config itself or ``{"config_file": path}``.
    """
    if set(args) == {"config_file"}:
        config = PlatformConfig.from_yaml(Path(args["config_file"]))
    else:
        config = PlatformConfig.model_validate(args).resolved(Path.cwd())
    return build_platform(config)
