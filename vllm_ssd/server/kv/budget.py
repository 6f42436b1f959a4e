"""How many blocks the draft's paged KV cache gets: a memory budget, not a worst case.

The budget is ``kv_cache_gb`` when set; otherwise a share of the memory free when the draft
server starts (after the target's weights, before the draft's): on a CPU
``CPU_FREE_SHARE`` of what is available less the target's own KV space
(``VLLM_CPU_KVCACHE_SPACE``, allocated after the draft starts), at most ``CPU_MAX_GB``; on a
GPU ``GPU_FREE_SHARE`` of the device's free memory. It never exceeds what every request at
full length would need (``kv_cache_tokens``, when set, fixes the token count instead).
Requests that do not fit are admitted to speculation later (``RequestTable.admit``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

GIB = 1 << 30
CPU_FREE_SHARE = 0.25
CPU_MAX_GB = 2.0
GPU_FREE_SHARE = 0.10
MIN_BLOCKS = 16  # the smallest cache built, whatever the budget says


@dataclass(frozen=True)
class KvSizing:
    num_blocks: int
    budget_bytes: int  # what the cache may hold
    needed_bytes: int  # every request at full length, plus one build's branches
    source: str  # "kv_cache_gb", "kv_cache_tokens" or the default's rule

    def describe(self, block_size: int) -> str:
        return (f"draft KV cache {self.num_blocks} blocks x {block_size} tokens = "
                f"{self.budget_bytes / GIB:.2f} GiB ({self.source}; every request at full "
                f"length would need {self.needed_bytes / GIB:.2f} GiB)")


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int,
                       dtype_bytes: int) -> int:
    return num_layers * 2 * num_kv_heads * head_dim * dtype_bytes


def needed_blocks(max_num_seqs: int, max_len: int, num_speculative_tokens: int,
                  block_size: int, fanout_budget: int) -> int:
    """Every request's path (``max_len`` committed tokens + K drafts + the one being
    decoded), the branches of one build (each forks one copy-on-write block and writes at
    most K tokens: 2 + K // block_size blocks) and block 0 (CUDA-graph padding)."""
    k = num_speculative_tokens
    branch_blocks = max_num_seqs * fanout_budget * (2 + k // block_size)
    per_row = -(-(max_len + k + 1) // block_size)
    return max_num_seqs * per_row + branch_blocks + 1


def default_budget_bytes(device_type: str, free_bytes: int, target_kv_bytes: int) -> tuple[int, str]:
    """The default budget from the free memory and the rule it came from."""
    if device_type == "cuda":
        return int(GPU_FREE_SHARE * free_bytes), f"{GPU_FREE_SHARE:.0%} of free GPU memory"
    share = CPU_FREE_SHARE * max(free_bytes - target_kv_bytes, 0)
    return int(min(share, CPU_MAX_GB * GIB)), \
        f"{CPU_FREE_SHARE:.0%} of available memory, at most {CPU_MAX_GB:g} GiB"


def size_kv_cache(needed: int, bytes_per_block: int, block_size: int,
                  kv_cache_gb: float | None, kv_cache_tokens: int | None,
                  default: tuple[int, str]) -> KvSizing:
    """Blocks for the budget: never more than ``needed``, never fewer than MIN_BLOCKS."""
    if kv_cache_tokens:
        blocks, source = -(-kv_cache_tokens // block_size) + 1, "kv_cache_tokens"
    elif kv_cache_gb is not None:
        blocks, source = int(kv_cache_gb * GIB) // bytes_per_block, "kv_cache_gb"
    else:
        blocks, source = default[0] // bytes_per_block, default[1]
    blocks = max(min(blocks, needed), MIN_BLOCKS)
    return KvSizing(blocks, blocks * bytes_per_block, needed * bytes_per_block, source)


def free_memory_bytes(device) -> int:
    """Free memory of the draft's device now: the GPU's free memory, or the host's
    ``MemAvailable``."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def target_cpu_kv_bytes() -> int:
    """The target's CPU KV space (vLLM's ``VLLM_CPU_KVCACHE_SPACE``, GiB), which vLLM
    allocates after the draft server started; 0 where it is not set."""
    try:
        return int(float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 0) * GIB)
    except ValueError:
        return 0


def fit_fanout(fanout, max_branches: int):
    """fanout [R, K + 1] scaled down (floored) so that one build's branches fit in
    ``max_branches``; unchanged where they already fit."""
    total = int(fanout.sum())
    if total <= max_branches:
        return fanout
    return np.floor(fanout * (max(max_branches, 0) / total)).astype(fanout.dtype)
