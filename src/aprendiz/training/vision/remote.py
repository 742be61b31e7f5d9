"""The main environment's side of the image-training worker: no torch here.

``RemoteImageNetwork`` has scikit-learn's ``fit`` / ``predict_proba``, so ``candidates.train_with`` drives
it like the in-process ``ImageNetwork``: ``fit`` writes a request (the training pixels it is given, and the
validation, test and unlabelled pixels given at construction), runs ``python -m
aprendiz.training.vision.worker`` in the image-training environment, and reads the reply; ``predict_proba``
returns the probabilities torch computed there, for the validation or the test pixels only (the worker is
gone by then); ``onnx_bytes`` is the export, which ``train_with`` checks with this environment's onnxruntime.

``image_python()`` finds the interpreter: ``APRENDIZ_IMAGE_PYTHON`` (``make image-venv``'s, exported by the
Makefile), else this process's own when torchvision imports there (the Kubernetes training image), else none:
the candidates are then reported with ``UNAVAILABLE`` as their error.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from aprendiz.training.vision.torchfit import FitResult

log = logging.getLogger(__name__)

WORKER = "aprendiz.training.vision.worker"
REMOTE_ALGORITHMS = ("mobilenet_v3_small", "vit", "ssgan")
UNAVAILABLE = "torchvision is not available to this process: make image-venv, or set APRENDIZ_IMAGE_PYTHON"
TIMEOUT_S = 3600.0
STDERR_TAIL = 2000  # characters of the worker's stderr kept in an error


class ImageWorkerError(RuntimeError):
    """The worker failed (its own error, a crash or a timeout): the candidate's recorded error."""


def src_folder() -> Path:
    """The folder holding the ``aprendiz`` package: the worker's ``PYTHONPATH``."""
    import aprendiz

    return Path(aprendiz.__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def _own_python_has_torchvision() -> bool:
    """Whether torchvision imports in this process's interpreter (checked in a child: importing it here
    would load torch, and a torchvision beside the wrong torch fails only at import)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        done = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def resolve_image_python(configured: str | Path | None = None) -> tuple[str | None, str]:
    """(the interpreter, or None; why not, when None). ``configured``: a path to use instead of the
    setting (``APRENDIZ_IMAGE_PYTHON``)."""
    if configured is None:
        from aprendiz.settings import Settings

        configured = Settings().image_python
    if configured:
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path), ""
        return None, f"{UNAVAILABLE} (APRENDIZ_IMAGE_PYTHON is {str(path)!r}, which is not an executable file)"
    if _own_python_has_torchvision():
        return sys.executable, ""
    return None, UNAVAILABLE


def image_python(configured: str | Path | None = None) -> str | None:
    """The Python that runs the image-training worker, or None when there is none."""
    return resolve_image_python(configured)[0]


class RemoteImageNetwork:
    """A network of ``REMOTE_ALGORITHMS`` trained by the worker, as a scikit-learn-like estimator.

    ``validation``: the validation pixels and labels (early stopping); ``test``: the test pixels;
    ``unlabelled``: pixels without labels (the GAN's, unless its ``use_unlabelled`` is false);
    ``weights``: ImageNet weights (a ``torch.save``'d state_dict) for MobileNetV3-Small to fine-tune
    from; ``python``: the interpreter (``image_python()`` when None); ``threads``: torch's threads in the
    worker (None: torch's default; a ``threads`` param sets it too, from a candidate's params); ``progress``: the worker's progress bar on this process's stderr
    (default: when stderr is a terminal).
    """

    def __init__(self, algorithm: str, shape: tuple[int, int, int], params: dict[str, Any], seed: int,
                 validation: tuple[np.ndarray, np.ndarray], test: np.ndarray, *,
                 unlabelled: np.ndarray | None = None, weights: bytes | None = None, python: str | None = None,
                 threads: int | None = None, timeout_s: float = TIMEOUT_S, progress: bool | None = None) -> None:
        if algorithm not in REMOTE_ALGORITHMS:
            raise ValueError(f"{algorithm!r} is not trained by the image worker ({list(REMOTE_ALGORITHMS)})")
        self.algorithm, self.shape, self.params, self.seed = algorithm, tuple(shape), dict(params), seed
        self.validation, self.test, self.unlabelled, self.weights = validation, test, unlabelled, weights
        self.python, self.threads, self.timeout_s = python, self.params.pop("threads", threads), timeout_s
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.history: FitResult | None = None
        self.onnx_bytes: bytes | None = None
        self.reply: dict[str, Any] = {}
        self._p_val: np.ndarray | None = None
        self._p_test: np.ndarray | None = None

    @property
    def reported(self) -> dict[str, Any]:
        """What the candidate's params record besides its own: the unlabelled images the GAN learnt from,
        the ImageNet weights loaded, and the versions of torch and torchvision that trained it."""
        extra: dict[str, Any] = {k: self.reply[k] for k in ("unlabelled_images", "pretrained") if k in self.reply}
        versions = self.reply.get("versions") or {}
        extra.update({k: versions[k] for k in ("torch", "torchvision") if k in versions})
        return extra

    def fit(self, x: np.ndarray, y: np.ndarray) -> "RemoteImageNetwork":
        python, why = (self.python, "") if self.python else resolve_image_python()
        if python is None:
            raise ImageWorkerError(why)
        with tempfile.TemporaryDirectory(prefix="aprendiz-vision-") as tmp:
            folder = Path(tmp)
            self._write_request(folder, x, y)
            self._run(python, folder)
            self._read_reply(folder)
        return self

    def _write_request(self, folder: Path, x: np.ndarray, y: np.ndarray) -> None:
        arrays = {"x_train": np.ascontiguousarray(x, dtype=np.float32), "y_train": np.asarray(y, dtype=np.int64),
                  "x_val": np.ascontiguousarray(self.validation[0], dtype=np.float32),
                  "y_val": np.asarray(self.validation[1], dtype=np.int64),
                  "x_test": np.ascontiguousarray(self.test, dtype=np.float32)}
        if self.unlabelled is not None and len(self.unlabelled) and self.algorithm == "ssgan" \
                and self.params.get("use_unlabelled", True):
            arrays["unlabelled"] = np.ascontiguousarray(self.unlabelled, dtype=np.float32)
        np.savez(folder / "request.npz", **arrays)  # type: ignore[arg-type]
        if self.weights is not None:
            (folder / "weights.pt").write_bytes(self.weights)
        request = {"algorithm": self.algorithm, "params": self.params, "seed": self.seed, "shape": list(self.shape),
                   "progress": self.progress, "threads": self.threads}
        (folder / "request.json").write_text(json.dumps(request))

    def _run(self, python: str, folder: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(src_folder()), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The progress bar goes straight to this process's terminal; otherwise stderr is kept for the error.
        stderr = None if self.progress else subprocess.PIPE
        try:
            done = subprocess.run([python, "-m", WORKER, str(folder)], env=env, stdout=subprocess.PIPE,
                                  stderr=stderr, timeout=self.timeout_s, text=True, errors="replace")
        except subprocess.TimeoutExpired:
            raise ImageWorkerError(f"the image worker ({self.algorithm}) ran past {self.timeout_s:.0f} s") from None
        except OSError as exc:
            raise ImageWorkerError(f"the image worker could not start with {python}: {exc}") from None
        if done.stdout:
            log.debug("image worker (%s) stdout: %s", self.algorithm, done.stdout[-STDERR_TAIL:])
        reply_file = folder / "reply.json"
        reply = json.loads(reply_file.read_text()) if reply_file.exists() else {}
        if done.returncode != 0 or "error" in reply:
            tail = (done.stderr or "").strip()[-STDERR_TAIL:]
            message = reply.get("error") or f"the image worker ({self.algorithm}) exited with status {done.returncode}"
            if not reply.get("error") and tail:
                message += f": {tail}"
            raise ImageWorkerError(message)

    def _read_reply(self, folder: Path) -> None:
        self.reply = json.loads((folder / "reply.json").read_text())
        self.history = FitResult.from_json(self.reply["history"])
        self.onnx_bytes = (folder / "model.onnx").read_bytes()
        with np.load(folder / "reply.npz") as stored:
            self._p_val, self._p_test = stored["p_val"], stored["p_test"]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """torch's probabilities [N, 2] from the worker, for the validation or the test pixels."""
        if self._p_val is None or self._p_test is None:
            raise ValueError("this network is not fitted")
        for known, probabilities in ((self.validation[0], self._p_val), (self.test, self._p_test)):
            if x is known or (np.shape(x) == np.shape(known) and np.array_equal(x, known)):
                return probabilities
        raise ValueError("the image worker computed probabilities for the validation and the test pixels only; "
                         f"these {np.shape(x)} are neither")
