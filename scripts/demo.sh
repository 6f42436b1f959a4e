#!/usr/bin/env bash
# The main job on an embedded default: install, build the offline Qwen2.5-Coder pair,
# and compare SSD with plain decoding and vLLM's own speculative decoding (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_cpu.sh .venv
source scripts/env.sh
.venv/bin/python benchmarks/models/build_models.py --out "$VLLM_SSD_MODELS" qwen-1.5b qwen-0.5b
.venv/bin/python benchmarks/bench_offline.py --preset demo
