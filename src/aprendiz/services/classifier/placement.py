"""Where a classifier runs: inside the ingress replica's process, or in replicas of its own.

- ``ingress``: the ingress holds the onnxruntime session and answers without a deployment-handle
  call. This is for light models: a tabular graph or a TF-IDF text graph answers in microseconds
  a row, far less than the hop to another process costs (docs/benchmarks.md: the breast-cancer
  classifier served 0.13 to 0.35 times KServe's requests/s through a replica of its own).
- ``replica``: its own Serve deployment, with its own autoscaling, batching and accelerator. This
  is for heavy models (a transformer encoder, an image network, anything that wants a GPU): they
  would hold the ingress's event loop, and every other request of the entrance with it.
- ``auto`` (the default) decides from the serving version's card, as ``decide`` says, and the
  decision is logged and shown in ``GET /v2/models/{name}`` (``parameters.placement``).

A classifier with ``accelerator: gpu`` always gets replicas of its own: only they ask Ray for a
GPU (the ingress replicas hold none), so no card is read for it.

The decision is taken when the application is built and holds for the model name: a new version
must keep its inputs (a new schema needs a new name), and a heavier version of the same name is
served where the first one was until the application is deployed again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from aprendiz.config import ClassifierModel
from aprendiz.registry import ModelCard, ModelRegistry

log = logging.getLogger("aprendiz.classifier")

# The ``auto`` rule's thresholds, from the cards the training job writes (latency_ms: one row,
# one onnxruntime thread; size_bytes: model.onnx). Measured here: the breast-cancer logistic
# regression 0.014 ms and 1 KB; the es-or-en TF-IDF graph with its tokenizer 0.43 ms and 0.5 MB;
# MiniLM embeddings with logistic regression 5.0 ms and 90 MB. The entrance's own work is about
# 0.3 ms a request, so a model under 1 ms a row costs less in the ingress than the hop it saves,
# and one under 32 MiB costs each ingress replica little memory.
LIGHT_KINDS = ("tabular", "text")
INGRESS_MAX_LATENCY_MS = 1.0
INGRESS_MAX_BYTES = 32 * 1024 * 1024

Where = Literal["ingress", "replica"]


@dataclass(frozen=True)
class Placement:
    where: Where
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"placement": self.where, "placement_reason": self.reason}


def decide(config: ClassifierModel, card: ModelCard | None) -> Placement:
    """The placement of ``config``: replica on a GPU, else its explicit setting, or the ``auto`` rule on ``card``."""
    if config.accelerator == "gpu":
        return Placement("replica", "accelerator: gpu runs in replicas of its own (the ingress holds no GPU)")
    if config.placement != "auto":
        return Placement(config.placement, f"placement: {config.placement} in the config")
    if card is None:
        return Placement("replica", "auto: no serving version to read a card from, so the safe choice")
    if card.kind not in LIGHT_KINDS:
        return Placement("replica", f"auto: kind {card.kind} runs in replicas of its own")
    latency, size = card.metrics.get("latency_ms"), card.metrics.get("size_bytes")
    if latency is None or size is None:
        return Placement("replica", f"auto: version {card.version}'s card records no latency_ms or size_bytes")
    measured = f"{latency:.3f} ms a row, {size / 2**20:.1f} MiB (version {card.version})"
    if latency > INGRESS_MAX_LATENCY_MS:
        return Placement("replica", f"auto: {measured}; over {INGRESS_MAX_LATENCY_MS:g} ms a row")
    if size > INGRESS_MAX_BYTES:
        return Placement("replica", f"auto: {measured}; over {INGRESS_MAX_BYTES / 2**20:.0f} MiB")
    return Placement("ingress", f"auto: {measured}; light enough for the ingress")


def serving_card(config: ClassifierModel, registry: ModelRegistry) -> ModelCard | None:
    """The card of the version the classifier would serve now (pinned, else the champion)."""
    version = config.version
    if version is None:
        champion = registry.champion(config.name)
        if champion is None:
            return None
        version = champion.version
    return registry.card(config.name, version)


def place(config: ClassifierModel, registry: ModelRegistry) -> Placement:
    """Decide, reading the card only for ``auto`` on CPU; a store that cannot be read means ``replica``."""
    card = None
    if config.placement == "auto" and config.accelerator == "cpu":
        try:
            card = serving_card(config, registry)
        except Exception as exc:  # a store outage at build time must not stop the application
            log.warning("classifier %s: cannot read its card (%s); placing it in its own replicas", config.name, exc)
    placement = decide(config, card)
    log.info("classifier %s: placed in the %s (%s)", config.name, placement.where, placement.reason)
    return placement
