#!/usr/bin/env bash
# Make (or reuse) the image-training environment: scripts/image-venv.sh VENV REQUIREMENTS [PIP_ARGS...]
#
# The environment lives outside the clone (by default ~/.cache/aprendiz/image-venv, see the Makefile),
# so every clone and CI run on one machine shares it. It is keyed on the requirements file's content:
# VENV/.aprendiz-<sha256 prefix> says that exact file is installed; a changed file installs again into
# the same environment. A lock keeps two clones from building it at once.
set -euo pipefail

venv=$1
requirements=$2
shift 2
python=${PYTHON:-python3}
key=$(sha256sum "$requirements" | cut -c1-16)
stamp="$venv/.aprendiz-$key"

[[ -f $stamp ]] && exit 0
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
[[ -f $stamp ]] && exit 0  # another clone built it while this one waited

start=$SECONDS
echo "aprendiz: making the image-training environment in $venv (torch and torchvision: several GB, once per machine)"
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$venv/bin/python" -m pip install --quiet "$@" -r "$requirements"
"$venv/bin/python" -c "import torch, torchvision, onnx, onnxruntime, tqdm; print('aprendiz: image venv: torch', torch.__version__, 'torchvision', torchvision.__version__)"
rm -f "$venv"/.aprendiz-*
touch "$stamp"
echo "aprendiz: image-training environment ready in $((SECONDS - start)) s"
