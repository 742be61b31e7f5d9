"""One record per model the entrance serves: its backend, card, price and fallback.

``build_routes`` makes the table from the platform config and the deployment handles the
ingress was bound to; the gateway resolves every request's model name against it
(a generator, ``<model>:<adapter>`` for a LoRA adapter, or a classifier).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union
from urllib.parse import urlsplit

import httpx
from ray.serve.handle import DeploymentHandle

from aprendiz.capabilities import Capabilities, RequestCaps
from aprendiz.config import EmbeddingModel, PlatformConfig
from aprendiz.errors import InvalidRequestError, ModelNotFoundError
from aprendiz.loras import AdapterStore, split_model_id
from aprendiz.services.embedder.model import EmbeddingModelError, read_card
from aprendiz.services.gateway.backends import ClassifierBackend, HostedEmbedder, HostedGenerator
from aprendiz.services.gateway.metering import TokenCounter
from aprendiz.services.gateway.rented import RentedUpstream
from aprendiz.services.raycompat import ModelCard
from aprendiz.store import ObjectStore

log = logging.getLogger("aprendiz.gateway")

Backend = Union[HostedGenerator, HostedEmbedder, RentedUpstream, ClassifierBackend]


@dataclass
class ModelRoute:
    id: str
    backend: Backend
    card: ModelCard | None = None  # generators' (hosted and rented); None for classifiers
    hourly_usd: float = 0.0  # hosted replicas'
    fallback: str | None = None
    fallback_after_s: float | None = None
    counter: TokenCounter | None = None  # tokens, where the backend reports no usage
    capabilities: Capabilities = field(default_factory=Capabilities)  # generators' (aprendiz.capabilities)
    caps: RequestCaps = field(default_factory=RequestCaps)
    embedding: bool = False  # an embedding model (POST /v1/embeddings), hosted or rented

    @property
    def kind(self) -> str:
        return self.backend.kind


class RouteTable:
    """Generators and embedding models (hosted and rented), and classifiers: two namespaces, as the
    protocols' routes are (OpenAI's models share one)."""

    def __init__(self, routes: Iterable[ModelRoute]):
        routes = list(routes)
        self._generators = {r.id: r for r in routes if r.kind != "classifier" and not r.embedding}
        self._embedders = {r.id: r for r in routes if r.embedding}
        self._classifiers = {r.id: r for r in routes if r.kind == "classifier"}

    def generators(self, kind: str | None = None) -> list[ModelRoute]:
        return [r for r in self._generators.values() if kind is None or r.kind == kind]

    def embedders(self, kind: str | None = None) -> list[ModelRoute]:
        return [r for r in self._embedders.values() if kind is None or r.kind == kind]

    def embedder(self, model: str, visible: Callable[[str], bool] = lambda name: True) -> ModelRoute:
        """The embedding model's route; a chat model named here is a 400 that says where it goes."""
        route = self._embedders.get(model)
        if route is not None:
            return route
        if model in self._generators:
            raise InvalidRequestError(f"`{model}` is a chat model: send it to /v1/chat/completions; the embedding "
                                      f"models: {sorted(m for m in self._embedders if visible(m))}", param="model")
        available = sorted(m for m in self._embedders if visible(m))
        raise ModelNotFoundError(f"The embedding model `{model}` does not exist; available: {available}", param="model")

    def classifiers(self) -> list[ModelRoute]:
        return list(self._classifiers.values())

    def classifier_backends(self) -> list[ClassifierBackend]:
        return [r.backend for r in self._classifiers.values() if isinstance(r.backend, ClassifierBackend)]

    def fallback_of(self, route: ModelRoute) -> ModelRoute | None:
        return self._generators.get(route.fallback) if route.fallback else None

    def classifier(self, name: str, visible: Callable[[str], bool] = lambda name: True) -> ModelRoute:
        """The classifier's route; a 404 names only the ``visible`` ones (those the caller may call)."""
        route = self._classifiers.get(name)
        if route is None:
            available = sorted(n for n in self._classifiers if visible(n))
            raise ModelNotFoundError(f"The classifier `{name}` does not exist; available classifiers: {available}")
        return route

    async def generator(
        self, model: str | None, visible: Callable[[str], bool] = lambda name: True
    ) -> tuple[ModelRoute, str]:
        """The route of the generator a request names (``None``: the only one there is), and the name
        to serve it under (``<model>:<adapter>`` keeps its adapter). Errors name only the ``visible``
        models."""
        available = sorted(m for m in self._generators if visible(m))
        if model in self._embedders:
            raise InvalidRequestError(f"`{model}` is an embedding model: send it to /v1/embeddings", param="model")
        if model is None:
            if len(self._generators) == 1:
                only = next(iter(self._generators))
                return self._generators[only], only
            raise InvalidRequestError(f"`model` is required; available models: {available}", param="model")
        if model in self._generators:
            return self._generators[model], model
        base, adapter = split_model_id(model)
        route = self._generators.get(base)
        if adapter is not None and route is not None and isinstance(route.backend, HostedGenerator):
            await route.backend.check_adapter(adapter)
            return route, model
        raise ModelNotFoundError(f"The model `{model}` does not exist; available models: {available}", param="model")

    async def card(self, model: str) -> ModelCard:
        if model in self._embedders:
            card = self._embedders[model].card
            assert card is not None, "every embedding route has a card"
            return card
        route, name = await self.generator(model)
        _, adapter = split_model_id(name)
        if name == route.id or adapter is None or not isinstance(route.backend, HostedGenerator):
            assert route.card is not None, "every generator route has a card"
            return route.card
        return route.backend.adapter_card(adapter)

    async def cards(self) -> list[ModelCard]:
        """Every model's card: hosted generators, their adapters, hosted embedding models, then rented."""
        hosted = [r.backend for r in self.generators("hosted") if isinstance(r.backend, HostedGenerator)]
        adapters = [b.adapter_card(a) for b in hosted for a in await b.adapter_names()]
        embedders = [r.card for r in self.embedders("hosted") if r.card is not None]
        rented = [r.card for r in [*self.generators("rented"), *self.embedders("rented")] if r.card is not None]
        return [*(b.card for b in hosted), *adapters, *embedders, *rented]


def _rented_card(upstream: RentedUpstream) -> ModelCard:
    r = upstream.model
    return ModelCard(
        id=r.id, object="model", owned_by="rented", permission=[],
        metadata={"backend": "rented", "provider": urlsplit(r.base_url).netloc, "upstream_model": r.upstream_model,
                  **({"kind": "embedding"} if r.kind == "embedding" else {"capabilities": r.capabilities.model_dump()})},
    )


def _embedder_card(model: EmbeddingModel) -> tuple[ModelCard, int | None]:
    """A hosted embedding model's card, with its dimension and token limit when its folder tells them."""
    metadata: dict[str, object] = {"backend": "hosted", "kind": "embedding", "max_inputs": model.max_inputs}
    dimension = None
    try:
        card = read_card(Path(model.source))
        dimension = int(card["dimension"])
        metadata.update(dimension=dimension, max_input_tokens=card["max_input_tokens"])
    except EmbeddingModelError as exc:  # the replicas report it as they fail to load; the entrance serves on
        log.warning("embedding model %s: %s", model.id, exc)
    card_ = ModelCard(id=model.id, object="model", owned_by="aprendiz", permission=[], metadata=metadata)
    return card_, dimension


def _with_capabilities(card: ModelCard, capabilities: Capabilities) -> ModelCard:
    return card.model_copy(update={"metadata": {**(card.metadata or {}), "capabilities": capabilities.model_dump()}})


def build_routes(
    platform: PlatformConfig,
    *,
    llm_handles: dict[str, DeploymentHandle],
    model_cards: dict[str, ModelCard],
    classifiers: dict[str, ClassifierBackend],
    client: httpx.AsyncClient,
    embedder_handles: dict[str, DeploymentHandle] | None = None,
) -> RouteTable:
    """The route table: the configured generators and rented models, with their handles, and the
    classifiers' backends (in the ingress or in replicas of their own)."""
    routes = []
    prices = platform.gateway
    for g in platform.generators:
        store = platform.lora_store_for(g)
        adapters = AdapterStore(ObjectStore(store.url, storage_options=store.storage_options())) if store else None
        card = _with_capabilities(model_cards[g.id], g.capabilities())
        routes.append(ModelRoute(
            g.id, HostedGenerator(g.id, llm_handles[g.id], card, adapters), card,
            hourly_usd=prices.generator_hourly_usd(g), fallback=g.fallback,
            fallback_after_s=g.fallback_after_s if g.fallback else None,
            capabilities=g.capabilities(), caps=g.request_caps,
        ))
    for e in platform.embeddings:
        card, dimension = _embedder_card(e)
        backend = HostedEmbedder(e.id, (embedder_handles or {})[e.id], dimension=dimension, max_inputs=e.max_inputs)
        routes.append(ModelRoute(e.id, backend, card, hourly_usd=prices.classifier_hourly_usd(e), embedding=True))
    for r in platform.rented:
        key = os.environ.get(r.api_key_env) if r.api_key_env else None
        if r.api_key_env and not key:
            log.warning("rented model %s: the environment variable %s is not set; calls go without a key",
                        r.id, r.api_key_env)
        upstream = RentedUpstream(r, key, client)
        routes.append(ModelRoute(r.id, upstream, _rented_card(upstream), fallback=r.fallback,
                                 counter=TokenCounter(r.tokenizer), capabilities=r.capabilities, caps=r.request_caps,
                                 embedding=r.kind == "embedding"))
    for c in platform.classifiers:
        routes.append(ModelRoute(c.name, classifiers[c.name], hourly_usd=prices.classifier_hourly_usd(c)))
    return RouteTable(routes)
