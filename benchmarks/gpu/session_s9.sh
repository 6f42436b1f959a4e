#!/usr/bin/env bash
# One GPU session (call 2, right after a call that staged part00 in /tmp/parts): install the
# vLLM 0.26 bundle (.gb2 carries part01 and the installer), then the GPU tests, the draft's
# glue pass at every query length (profile_draft) and builds against a simulated 7 ms target.
# Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cp .gb2/* /tmp/parts/ && bash /tmp/parts/install.sh /tmp/parts > "$OUT/install.log" 2>&1 \
  || { tail -20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0 \
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DRAFT=benchmarks/gpu/configs/qwen2.5-0.5b
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
timeout 280 python3 -m pytest -q tests/gpu > "$OUT/gpu_tests.log" 2>&1
tail -15 "$OUT/gpu_tests.log"
timeout 120 python3 benchmarks/profile_draft.py --device cuda --dummy --draft $DRAFT --kernels \
  > "$OUT/profile_draft.json" 2> "$OUT/profile_draft.log" || tail -20 "$OUT/profile_draft.log"
python3 -c "import json; d=json.load(open('$OUT/profile_draft.json')); print('glue', d['glue_ms_by_query_len'], 'decode', d['decode_ms_by_rows'])"
timeout 120 python3 benchmarks/gpu/profile_build.py --dummy --draft $DRAFT --target-step-ms 7 \
  --batch-sizes 1,16,64 --plan auto --out "$OUT/profile_build_auto.json" \
  > "$OUT/profile_build_auto.log" 2>&1; tail -8 "$OUT/profile_build_auto.log"
