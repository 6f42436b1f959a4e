#!/usr/bin/env bash
# One GPU session in steps (each call within 30 s of the last; results in $OUT):
#   call 1: cp .gb1/* /tmp/parts/                        (carry .gb1: part00)
#   call 2: bash benchmarks/gpu/session.sh install bench    (carry .gb2: the rest)
#   call 3: bash benchmarks/gpu/session.sh bench_more glue
#   call 4: bash benchmarks/gpu/session.sh tests
# Calls 2-4 start with SSD_SOURCE_COMMIT=<commit>[+dirty], the commit written out as
# `git rev-parse HEAD` gives it here: the device's copy of the tree may hold a stale .git,
# and benchmarks/provenance.py records the stated commit instead.
# bench: Qwen2.5-7B / 0.5B shapes on one GPU, plain / mode sd / the default (plan chosen by
# measurement) at bs 1, 4, 16, 64, 256 tokens; bench_more: mode ssd, the zero-cost proposer
# (ceiling) and vLLM's draft_model SD, same settings; glue: the draft's glue pass at every
# query length; tests: pytest tests/gpu (the restart count, every glue length from a graph).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/parts
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0 \
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DRAFT=benchmarks/gpu/configs/qwen2.5-0.5b
BATCHES=${BATCHES:-1,4,16,64}  # batch sizes of bench and bench_more
for step in "$@"; do
  echo "[session] $step $(date -u +%T)"
  case $step in
    install) cp .gb2/* /tmp/parts/ && bash /tmp/parts/install.sh /tmp/parts > "$OUT/install.log" 2>&1 \
               || { tail -20 "$OUT/install.log"; exit 1; }
             nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" ;;
    tests) timeout 580 python3 -m pytest -q tests/gpu > "$OUT/gpu_tests.log" 2>&1
           tail -15 "$OUT/gpu_tests.log" ;;
    glue) timeout 100 python3 benchmarks/profile_draft.py --device cuda --dummy --draft $DRAFT \
            --kernels > "$OUT/profile_draft.json" 2> "$OUT/profile_draft.log" \
            || tail -20 "$OUT/profile_draft.log"
          python3 -c "import json; d=json.load(open('$OUT/profile_draft.json')); print('glue', d.get('glue_ms_by_query_len'), 'decode', d.get('decode_ms_by_rows'))" ;;
    bench) timeout 440 python3 benchmarks/gpu/bench_gpu.py --pairs qwen7b --methods plain,ssd_sd,ssd \
             --batch-sizes $BATCHES --output-len 256 --out "$OUT/bench_qwen7b.jsonl" \
             > "$OUT/bench_qwen7b.log" 2>&1
           grep -v '^{"case"' "$OUT/bench_qwen7b.log" | tail -20 ;;
    bench_more) timeout 480 python3 benchmarks/gpu/bench_gpu.py --pairs qwen7b \
                  --methods ssd_ssd,ceiling,vllm_sd --batch-sizes $BATCHES --output-len 256 \
                  --out "$OUT/bench_qwen7b_more.jsonl" > "$OUT/bench_qwen7b_more.log" 2>&1
                grep -v '^{"case"' "$OUT/bench_qwen7b_more.log" | tail -20 ;;
  esac
done
