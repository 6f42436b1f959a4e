# Environment for running vLLM + vllm_ssd on this CPU machine: `source scripts/env.sh`.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export SSD_SCRATCH=${SSD_SCRATCH:-$_root/.scratch}
mkdir -p "$SSD_SCRATCH/tmp"
export TMPDIR=$SSD_SCRATCH/tmp                       # vLLM leaves socket files behind
export VLLM_CACHE_ROOT=$SSD_SCRATCH/vllm-cache
export TORCHINDUCTOR_CACHE_DIR=$SSD_SCRATCH/inductor-cache
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}  # GiB; unset, vLLM takes ~21 GiB
export VLLM_TARGET_DEVICE=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1
export VLLM_SSD_MODELS=${VLLM_SSD_MODELS:-$HOME/.cache/vllm-ssd-models}
unset _root
