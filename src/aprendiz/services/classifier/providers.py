"""Which onnxruntime execution providers a classifier's session asks for, and which one it got.

A classifier with ``accelerator: gpu`` asks for CUDA with CPU behind it: onnxruntime places each
node of the graph on the first provider in the list that can run it, so an operator CUDA lacks
still runs, on CPU. A build of onnxruntime without CUDA (the CPU wheel, or a GPU image whose
wheel is the wrong one) would make asking for CUDA an error, so the list keeps only the providers
this onnxruntime offers; the replica then serves on CPU, slower but serving, and says so once in
its log. Even a CUDA build may fall back to CPU when the session is made (no device, a missing
CUDA library): ``log_providers`` logs what the session really runs on.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aprendiz.config import ClassifierModel

log = logging.getLogger("aprendiz.classifier")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Classifier names already warned that CUDA is missing: the list is asked for on every load (each
# new version), and one warning a process says it all.
_warned_no_cuda: set[str] = set()


class Session(Protocol):
    """What ``log_providers`` reads of an ``onnxruntime.InferenceSession``."""

    def get_providers(self) -> list[str]: ...


def available_providers() -> list[str]:
    """The providers this onnxruntime build offers (imported here: the config side needs no onnxruntime)."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def execution_providers(config: ClassifierModel, available: list[str] | None = None) -> list[str]:
    """The ``providers`` for ``onnxruntime.InferenceSession``: CPU alone on CPU; on GPU, CUDA when
    this onnxruntime offers it, always followed by CPU as the fallback.

    ``available``: the providers on offer (default: ``onnxruntime.get_available_providers()``)."""
    if config.accelerator == "cpu":
        return [CPU]
    offered = available_providers() if available is None else available
    if CUDA in offered:
        return [CUDA, CPU]
    _warn_no_cuda(config.name, offered)
    return [CPU]


def _warn_no_cuda(name: str, offered: list[str]) -> None:
    if name in _warned_no_cuda:
        return
    _warned_no_cuda.add(name)
    log.warning(
        "classifier %s: accelerator: gpu, but this onnxruntime offers no %s (it offers %s); the replica falls "
        "back to CPU. The GPU image needs the onnxruntime-gpu wheel.",
        name, CUDA, ", ".join(offered) or "none",
    )


def log_providers(name: str, version: str, session: Session, asked: list[str] | None = None) -> str:
    """Log the provider ``session`` runs on (the first of ``session.get_providers()``) and return it.

    With ``asked`` (what ``execution_providers`` gave): a session on another provider than the first
    asked for, such as CPU when CUDA could not start, is a warning, not an info line."""
    providers = session.get_providers()
    running = providers[0] if providers else CPU
    if asked and running != asked[0]:
        log.warning(
            "classifier %s version %s: onnxruntime runs on %s, not %s as asked (session providers: %s)",
            name, version, running, asked[0], ", ".join(providers),
        )
    else:
        log.info(
            "classifier %s version %s: onnxruntime runs on %s (session providers: %s)",
            name, version, running, ", ".join(providers),
        )
    return running
