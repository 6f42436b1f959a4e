#!/usr/bin/env bash
# The steps of one GPU session, run on the device machine from the repository root
# (vLLM 0.26 bundle parts from ../shared/gpu/make_bundle.sh carried in .gb/):
#   bash benchmarks/gpu/device_run.sh stage           # call 1: part00 -> /tmp/parts
#   bash benchmarks/gpu/device_run.sh install profile # call 2 (within 30 s): part01, install, profiles
#   bash benchmarks/gpu/device_run.sh tests e2e       # call 3: GPU tests, end-to-end Qwen2.5-7B
# Results go to $OUT (the device tool's folder), one file per step.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0 \
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
DRAFT=benchmarks/gpu/configs/qwen2.5-0.5b
mkdir -p "$OUT" /tmp/parts
for step in "$@"; do
  echo "[device_run] $step $(date -u +%T)"
  case $step in
    stage) cp .gb/* /tmp/parts/ ;;
    install) cp .gb/* /tmp/parts/ && bash /tmp/parts/install.sh /tmp/parts > "$OUT/install.log" 2>&1 \
             || { tail -20 "$OUT/install.log"; exit 1; } ;;
    profile)
      python3 benchmarks/profile_draft.py --device cuda --dummy --draft $DRAFT --kernels --ablations \
        > "$OUT/profile_draft.json" 2> "$OUT/profile_draft.log" || tail -30 "$OUT/profile_draft.log"
      for plan in auto full; do
        python3 benchmarks/gpu/profile_build.py --dummy --draft $DRAFT --target-step-ms 7 \
          --batch-sizes 1,4,16,64 --plan $plan --out "$OUT/profile_build_$plan.json" \
          > "$OUT/profile_build_$plan.log" 2>&1 || tail -30 "$OUT/profile_build_$plan.log"
      done ;;
    tests) python3 -m pytest -q tests/gpu > "$OUT/gpu_tests.log" 2>&1; tail -15 "$OUT/gpu_tests.log" ;;
    e2e) python3 benchmarks/gpu/bench_gpu.py --pairs qwen7b --methods plain,ssd \
           --out "$OUT/bench_qwen7b.jsonl" > "$OUT/bench_qwen7b.log" 2>&1 || tail -30 "$OUT/bench_qwen7b.log" ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
echo "[device_run] done $(date -u +%T)"
