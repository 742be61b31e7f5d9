"""One classifier, served from this process: its champion followed, its requests answered.

The same object serves in both placements (``placement.py``):

- in a classifier replica (its own deployment): requests come through a deployment handle
  and are batched with ``@serve.batch`` (the replica passes its batched ``infer``);
- in the ingress replica (light models): the ingress calls it directly, and a request's rows
  run inline on the event loop, or on a worker thread when they would hold the loop longer
  than ``INLINE_BUDGET_MS``.

Model swaps: every ``poll_interval_s`` (and on ``reconfigure``) the service reads
``champion.json``; a new version is loaded and self-checked off the event loop and only then
made current. A request holds the version it started with, so requests in flight finish on
the old one. A version that fails to load, or that takes other inputs than the serving one,
is refused with a log line and a metric, once, and the current one keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import numpy as np

from aprendiz import columns
from aprendiz.config import ClassifierModel
from aprendiz.errors import ServiceUnavailableError
from aprendiz.metrics import ClassifierMetrics
from aprendiz.registry import FeedbackRecord, ModelRegistry
from aprendiz.services.classifier import protocol
from aprendiz.services.classifier.model import ModelLoadError, OnnxClassifier
from aprendiz.services.classifier.providers import execution_providers, log_providers

log = logging.getLogger("aprendiz.classifier")

# Inline inference holds the event loop (and every other request of the process) for the
# call's duration; past this estimate (rows x the card's latency_ms per row) the call goes to a
# worker thread instead (onnxruntime releases the GIL), at the cost of a thread hop (~0.05 ms).
INLINE_BUDGET_MS = 1.0
# The per-row time assumed for a card that records none.
UNKNOWN_LATENCY_MS = 1.0

Infer = Callable[[OnnxClassifier, Any], Awaitable[np.ndarray]]


class StoreUnavailableError(RuntimeError):
    """The store did not answer a version's read (a connection reset, a timeout, a 5xx), or does not
    hold the whole version yet (a champion named before its files arrived): not the version's fault,
    so it is tried again at the next poll rather than refused."""


class ClassifierService:
    """Serves the champion version of one registry model (``load`` / ``ready`` / ``predict``).

    ``infer`` runs one request's rows on a model version; the default runs them in this process
    (inline or on a thread). A classifier replica passes its ``@serve.batch`` method instead."""

    def __init__(
        self, config: ClassifierModel, registry: ModelRegistry, metrics: ClassifierMetrics, *,
        infer: Infer | None = None,
    ) -> None:
        self.config = config
        self._registry = registry
        self._metrics = metrics
        self._infer = infer or self.infer_here
        self._pinned: str | None = config.version
        self._refused: set[str] = set()
        self._not_loaded: tuple[str, str] | None = None  # the last version the store could not give yet, and why
        self._current: OnnxClassifier | None = None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    @property
    def name(self) -> str:
        return self.config.name

    # -- model lifecycle ---------------------------------------------------------------
    async def start(self, *, required: bool = True) -> None:
        """Load the champion, then follow it. ``required``: a failed first load raises (a replica
        then fails its start, and Serve retries it); otherwise it is logged and retried at every
        poll, and requests get a 503 until a version loads (the ingress must not fall with one model)."""
        try:
            await self.refresh(initial=True)
        except Exception as exc:
            if required:
                raise
            log.error("classifier %s: no version loaded yet, retrying every %g s: %s",
                      self.name, self.config.poll_interval_s, exc)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._metrics.keep_alive())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: ``version`` pins a version (null follows the champion);
        ``poll_interval_s`` changes the polling; any change re-reads the champion now."""
        self._pinned = user_config.get("version")
        if "poll_interval_s" in user_config:
            self.config = self.config.model_copy(update={"poll_interval_s": float(user_config["poll_interval_s"])})
        if self._current is not None:
            await self.refresh()

    async def _poll(self) -> None:
        last_error = ""
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.refresh(initial=self._current is None)
                last_error = ""
            except Exception as exc:  # the poller must outlive a store outage
                if str(exc) != last_error:  # once per distinct failure, not once per poll
                    log.error("classifier %s: champion check failed: %s", self.name, exc, exc_info=True)
                last_error = str(exc)

    async def _target_version(self) -> str:
        if self._pinned:
            return self._pinned
        champion = await asyncio.to_thread(self._registry.champion, self.name)
        if champion is None:
            raise ModelLoadError(f"model {self.name} has no champion in {self._registry!r}")
        self._metrics.champion_promoted(champion.promoted_at.timestamp())
        return champion.version

    async def refresh(self, *, initial: bool = False) -> None:
        """Serve the target version (the pinned one, else the champion) if it is new and loads."""
        async with self._lock:
            version = await self._target_version()
            if self._current is not None and version == self._current.version:
                return
            if version in self._refused and not initial:
                return
            try:
                loaded = await self._load(version)
            except StoreUnavailableError as exc:
                if initial:
                    raise
                if (version, str(exc)) != self._not_loaded:  # once per version and cause, not per poll
                    log.warning("classifier %s: version %s not loaded yet (%s); still serving %s, the polls try again",
                                self.name, version, exc, self._current.version if self._current else None)
                self._not_loaded = (version, str(exc))
                return
            except Exception as exc:
                self._metrics.model_load_failures.inc(tags={"model": self.name, "version": version})
                if initial:
                    raise
                self._refused.add(version)
                log.error("classifier %s: refused version %s, still serving %s: %s",
                          self.name, version, self._current.version if self._current else None, exc)
                return
            old = self._current.version if self._current else None
            self._current = loaded
            self._metrics.switched(old, version)
            log.info("classifier %s: now serving version %s (was %s)", self.name, version, old)

    async def _load(self, version: str) -> OnnxClassifier:
        """The version loaded and self-checked. A store that fails to answer is StoreUnavailableError
        (retried), as is a version not completely there yet; one that is malformed or refused by its
        checks raises otherwise."""
        try:
            artifact = await asyncio.to_thread(self._registry.load, self.name, version)
        except FileNotFoundError as exc:  # not complete yet (card.json is written last), or named early
            raise StoreUnavailableError(f"version {version} is not (completely) in the store yet: {exc}") from exc
        except ValueError:
            raise  # its card is malformed: refused
        except Exception as exc:
            raise StoreUnavailableError(f"reading version {version} from the store failed: {exc!r}") from exc
        providers = execution_providers(self.config)
        loaded = await asyncio.to_thread(functools.partial(OnnxClassifier.load, artifact, providers=providers))
        log_providers(self.name, version, loaded.session, providers)
        if self._current is not None and loaded.signature != self._current.signature:
            raise ModelLoadError(
                f"version {version} takes other inputs than the serving version {self._current.version}"
                " (a new input schema needs a new model name)"
            )
        return loaded

    def model(self) -> OnnxClassifier:
        if self._current is None:
            raise ServiceUnavailableError(f"model {self.name} is not loaded")
        return self._current

    async def ready(self) -> bool:
        return self._current is not None

    # -- inference ---------------------------------------------------------------------
    def run(self, model: OnnxClassifier, batch: Any) -> np.ndarray:
        """One onnxruntime call, timed and counted."""
        started = time.perf_counter()
        probabilities = model.predict(batch)
        self._metrics.inferred(time.perf_counter() - started, len(batch))
        return probabilities

    async def infer_here(self, model: OnnxClassifier, rows: Any) -> np.ndarray:
        """In this process: inline when the estimate is within ``INLINE_BUDGET_MS``, else on a thread."""
        per_row = model.card.metrics.get("latency_ms", UNKNOWN_LATENCY_MS)
        if len(rows) * per_row <= INLINE_BUDGET_MS:
            return self.run(model, rows)
        return await asyncio.to_thread(self.run, model, rows)

    def run_batches(self, models: list[OnnxClassifier], rows: list[Any]) -> list[np.ndarray | None]:
        """Several requests' rows (a ``@serve.batch`` call): one onnxruntime call per model version,
        answers in request order."""
        answers: list[np.ndarray | None] = [None] * len(rows)
        groups: dict[int, list[int]] = {}
        for i, model in enumerate(models):
            groups.setdefault(id(model), []).append(i)
        for indexes in groups.values():
            model = models[indexes[0]]
            probabilities = self.run(model, model.stack([rows[i] for i in indexes]))
            offset = 0
            for i in indexes:
                answers[i] = probabilities[offset : offset + len(rows[i])]
                offset += len(rows[i])
        return answers

    async def _model_rows(self, model: OnnxClassifier, rows: Any) -> Any:
        """The model's batch: a request's images are decoded and transformed here, on a worker thread
        (Pillow releases the GIL); any other rows are already the model's."""
        if isinstance(rows, protocol.EncodedImages):
            return await asyncio.to_thread(self._decode_images, model, rows)
        return rows

    def _decode_images(self, model: OnnxClassifier, encoded: protocol.EncodedImages) -> np.ndarray:
        started = time.perf_counter()
        pixels = encoded.pixels(model.card, self.config.image_limits)
        self._metrics.decoded(time.perf_counter() - started, [len(item) for item in encoded.items])
        return pixels

    async def _predict(self, model: OnnxClassifier, rows: Any) -> tuple[np.ndarray, list[str]]:
        rows = await self._model_rows(model, rows)
        probabilities = await self._infer(model, rows)
        labels = model.labels_for(probabilities)
        self._metrics.served(model.version, labels, probabilities)
        return probabilities, labels

    # -- protocol entry points -----------------------------------------------------------
    async def predict_v1(self, body: Any) -> dict[str, Any]:
        model = self.model()
        rows = protocol.decode_instances(body, model.card, self.config.max_instances, self.config.image_limits)
        probabilities, labels = await self._predict(model, rows)
        return protocol.encode_v1(probabilities, labels, model.card)

    async def infer_v2(self, body: bytes, header_length: int | None) -> dict[str, Any]:
        model = self.model()
        rows, request = protocol.decode_v2(body, header_length, model.card, self.config.max_instances,
                                           self.config.image_limits)
        probabilities, labels = await self._predict(model, rows)
        return protocol.encode_v2(probabilities, labels, model.card, request)

    async def metadata_v2(self) -> dict[str, Any]:
        return protocol.v2_metadata(self.model().card)

    async def feedback(self, body: Any) -> dict[str, Any]:
        """Write the examples to the store; the answer (2xx) is sent only after the write returned."""
        model = self.model()
        rows, labels, ids = protocol.decode_feedback(body, model.card, self.config.max_instances, self.config.image_limits)
        now = datetime.now(timezone.utc)
        examples: list[dict[str, Any]]
        if isinstance(rows, protocol.EncodedImages):
            await self._model_rows(model, rows)  # every image must decode: nothing is accepted that cannot train
            examples = [{"image": base64.b64encode(item).decode("ascii")} for item in rows.items]
        elif model.card.kind == "text":
            examples = [{"text": text} for text in rows]
        else:
            examples = [{"features": values} for values in columns.records(rows, model.card.features)]
        records = [
            FeedbackRecord(**example, label=label, prediction_id=prediction_id, model_version=model.version,
                           received_at=now)
            for example, label, prediction_id in zip(examples, labels, ids)
        ]
        try:
            key = await asyncio.to_thread(self._registry.write_feedback, self.name, records)
        except Exception as exc:
            log.exception("classifier %s: feedback write failed", self.name)
            raise ServiceUnavailableError(f"feedback could not be stored, nothing was accepted: {exc}") from None
        for label in set(labels):
            self._metrics.feedback_examples.inc(
                labels.count(label), tags={"model": self.name, "label": model.card.labels[label]}
            )
        return {"accepted": len(records), "key": key, "model_version": model.version}
