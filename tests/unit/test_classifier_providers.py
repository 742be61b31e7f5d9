"""Which onnxruntime providers a classifier asks for (services/classifier/providers.py), and the log
line naming the one its session runs on. No GPU is here: the CUDA cases pass the providers on offer
as a GPU image's onnxruntime-gpu would list them; the session is a real onnxruntime one, on CPU."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime
import pytest

from aprendiz.config import ClassifierModel
from aprendiz.services.classifier import providers
from aprendiz.services.classifier.providers import CPU, CUDA, execution_providers, log_providers

GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]  # what onnxruntime-gpu offers
CPU_BUILD = ["AzureExecutionProvider", CPU]  # what the CPU wheel offers (this machine's)


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """Each test sees the once-a-process warning as a new process would."""
    providers._warned_no_cuda.clear()
    yield
    providers._warned_no_cuda.clear()


def gpu(name: str = "lesions", **extra) -> ClassifierModel:
    return ClassifierModel(name=name, accelerator="gpu", **extra)


def test_a_cpu_classifier_asks_for_cpu_whatever_is_on_offer():
    for offered in (GPU_BUILD, CPU_BUILD, None):
        assert execution_providers(ClassifierModel(name="m"), offered) == [CPU]


def test_a_gpu_classifier_asks_for_cuda_with_cpu_as_the_fallback():
    assert execution_providers(gpu(accelerator_type="L4", num_gpus=0.5), GPU_BUILD) == [CUDA, CPU]


def test_cuda_is_never_asked_of_an_onnxruntime_without_it_and_the_fallback_is_said_once(caplog):
    with caplog.at_level(logging.WARNING, logger="aprendiz.classifier"):
        assert execution_providers(gpu(), CPU_BUILD) == [CPU]
        assert execution_providers(gpu(), CPU_BUILD) == [CPU]  # a new version loads: no second warning
        assert execution_providers(gpu("other"), CPU_BUILD) == [CPU]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "classifier lesions: accelerator: gpu" in warnings[0]
    assert "falls back to CPU" in warnings[0] and "onnxruntime-gpu" in warnings[0]
    assert "AzureExecutionProvider, CPUExecutionProvider" in warnings[0]


def test_by_default_the_list_is_filtered_by_this_onnxruntime():
    """This machine's onnxruntime is the CPU wheel: a gpu classifier gets CPU here, as it would in
    an image without onnxruntime-gpu (and CUDA first where the wheel offers it)."""
    expected = [CUDA, CPU] if CUDA in onnxruntime.get_available_providers() else [CPU]
    assert execution_providers(gpu()) == expected


def test_every_list_is_one_onnxruntime_takes(tiny_onnx):
    for offered in (GPU_BUILD, CPU_BUILD):
        for config in (gpu(), ClassifierModel(name="m")):
            asked = [p for p in execution_providers(config, offered) if p in onnxruntime.get_available_providers()]
            session = onnxruntime.InferenceSession(tiny_onnx, providers=asked)
            assert session.get_providers()[0] in asked


@pytest.fixture(scope="module")
def tiny_onnx() -> bytes:
    """y = x + 1 over a float vector: the smallest graph a session loads."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "tiny", [x], [y], initializer=[one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_log_providers_names_the_provider_the_session_runs_on(tiny_onnx, caplog):
    session = onnxruntime.InferenceSession(tiny_onnx, providers=execution_providers(gpu(), CPU_BUILD))
    np.testing.assert_allclose(session.run(None, {"x": np.zeros(2, np.float32)})[0], [1.0, 1.0])
    caplog.clear()  # the fallback warning of execution_providers
    with caplog.at_level(logging.INFO, logger="aprendiz.classifier"):
        assert log_providers("lesions", "20260101T000000Z-abcd", session) == CPU
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "classifier lesions version 20260101T000000Z-abcd: onnxruntime runs on CPUExecutionProvider "
        "(session providers: CPUExecutionProvider)"
    )


class FellBack:
    """A session made with CUDA asked for that fell back to CPU (no device, a missing CUDA library)."""

    def get_providers(self) -> list[str]:
        return [CPU]


class OnCuda:
    def get_providers(self) -> list[str]:
        return [CUDA, CPU]


def test_a_session_that_fell_back_from_what_was_asked_is_a_warning(caplog):
    with caplog.at_level(logging.INFO, logger="aprendiz.classifier"):
        assert log_providers("lesions", "v1", FellBack(), asked=[CUDA, CPU]) == CPU
        assert log_providers("lesions", "v2", OnCuda(), asked=[CUDA, CPU]) == CUDA
    fell_back, on_cuda = caplog.records
    assert fell_back.levelno == logging.WARNING
    assert "runs on CPUExecutionProvider, not CUDAExecutionProvider as asked" in fell_back.getMessage()
    assert on_cuda.levelno == logging.INFO
    assert "version v2: onnxruntime runs on CUDAExecutionProvider" in on_cuda.getMessage()
