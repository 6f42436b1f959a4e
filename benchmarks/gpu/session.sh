#!/usr/bin/env bash
# One GPU session in steps (each call within 30 s of the last; results in $OUT):
#   call 1: cp .gb1/* /tmp/parts/                        (carry .gb1: part00)
#   call 2: bash benchmarks/gpu/session.sh install tests glue   (carry .gb2: the rest)
#   call 3: bash benchmarks/gpu/session.sh bench
# tests: pytest tests/gpu (the restart count, every glue length from a graph); glue: the
# draft's glue pass at every query length; bench: Qwen2.5-7B / 0.5B shapes on one GPU,
# plain / mode sd / the default (plan chosen by measurement) at bs 1, 16, 64.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/parts
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0 \
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DRAFT=benchmarks/gpu/configs/qwen2.5-0.5b
for step in "$@"; do
  echo "[session] $step $(date -u +%T)"
  case $step in
    install) cp .gb2/* /tmp/parts/ && bash /tmp/parts/install.sh /tmp/parts > "$OUT/install.log" 2>&1 \
               || { tail -20 "$OUT/install.log"; exit 1; }
             nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" ;;
    tests) timeout 240 python3 -m pytest -q tests/gpu > "$OUT/gpu_tests.log" 2>&1
           tail -15 "$OUT/gpu_tests.log" ;;
    glue) timeout 100 python3 benchmarks/profile_draft.py --device cuda --dummy --draft $DRAFT \
            --kernels > "$OUT/profile_draft.json" 2> "$OUT/profile_draft.log" \
            || tail -20 "$OUT/profile_draft.log"
          python3 -c "import json; d=json.load(open('$OUT/profile_draft.json')); print('glue', d.get('glue_ms_by_query_len'), 'decode', d.get('decode_ms_by_rows'))" ;;
    bench) timeout 560 python3 benchmarks/gpu/bench_gpu.py --pairs qwen7b --methods plain,ssd_sd,ssd \
             --batch-sizes 1,16,64 --out "$OUT/bench_qwen7b.jsonl" > "$OUT/bench_qwen7b.log" 2>&1
           cat "$OUT/bench_qwen7b.log" | grep -v '^{"case"' | tail -20 ;;
  esac
done
