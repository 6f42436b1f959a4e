#!/usr/bin/env bash
# The main job on an embedded default: install, build the offline Qwen2.5-Coder pair, and
# compare SSD with plain decoding and vLLM's own speculative decoding (draft_model) on this
# CPU: three engines (plain on both cores, vLLM SD on both cores, SSD with its target on
# CPU 0 and its draft server on CPU 1), batch size 1, greedy, 4 prompts x 48 tokens, engines
# without torch.compile (it cost 1.5-2.5 min per engine). Under 10 minutes on 2 cores once
# the models are built; shows each engine's progress; ends with one side-by-side table.
# Results go to .scratch/demo/ (the committed results in benchmarks/results/ stay as they are).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
echo "[demo] 1/3 install into .venv (skipped when up to date)"
bash scripts/install_cpu.sh .venv
source scripts/env.sh
echo "[demo] 2/3 models in $VLLM_SSD_MODELS (skipped when built)"
.venv/bin/python benchmarks/models/build_models.py --out "$VLLM_SSD_MODELS" qwen-1.5b qwen-0.5b
echo "[demo] 3/3 plain / vLLM draft_model SD / SSD, one engine each"
.venv/bin/python benchmarks/bench_offline.py --preset demo "$@"
echo "[demo] finished in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
