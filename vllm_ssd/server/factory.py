"""Builds a draft engine from the settings and the proposer's handshake: device placement,
the draft KV cache's size, the model, the engine. Tests and benchmarks build engines here
too, without a socket."""
from __future__ import annotations

import logging
import os

from vllm_ssd import protocol as P
from vllm_ssd.settings import SSDSettings, parse_cpu_list

logger = logging.getLogger(__name__)


def row_positions(max_model_len: int, num_speculative_tokens: int) -> int:
    """Positions one request can hold in the draft: the target's limit, then one round of
    drafts and its bonus token past the last committed one, and one token of slack."""
    return max_model_len + num_speculative_tokens + 2


def draft_kv_blocks(max_num_seqs: int, max_len: int, num_speculative_tokens: int,
                    block_size: int, fanout_budget: int, kv_cache_tokens: int | None) -> int:
    """Blocks of the draft's paged KV cache: every request's path (``max_len`` committed
    tokens + K drafts + the one being decoded), or ``kv_cache_tokens`` of them; plus the
    branches of one cache build (each forks one copy-on-write block and writes at most K
    tokens: 2 + K // block_size blocks); plus block 0, reserved for CUDA-graph padding."""
    k = num_speculative_tokens
    branch_blocks = max_num_seqs * fanout_budget * (2 + k // block_size)
    if kv_cache_tokens:
        return -(-kv_cache_tokens // block_size) + branch_blocks + 1
    per_row = -(-(max_len + k + 1) // block_size)
    return max_num_seqs * per_row + branch_blocks + 1


def build_engine(settings: SSDSettings, hello: P.Hello):
    import torch

    from vllm_ssd.server.device.model_runner import DraftModelRunner
    from vllm_ssd.server.engine import DraftEngine
    from vllm_ssd.server.stats import ServerStats

    device = torch.device("cpu" if settings.draft_device == "auto" else settings.draft_device)
    place_process(device, settings.draft_cpus)
    if device.type == "cuda":
        if device.index is None:  # "cuda": the process's current device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # graphs capture on the current device's stream
    k = hello.num_speculative_tokens
    max_len = row_positions(hello.max_model_len, k)
    num_blocks = draft_kv_blocks(hello.max_num_seqs, max_len, k, settings.block_size,
                                 settings.fanout_budget, settings.kv_cache_tokens)
    runner = DraftModelRunner(settings.draft_model, device, settings.draft_dtype, num_blocks,
                              settings.block_size, max_len + k + 1,
                              dummy=settings.load_format == "dummy",
                              quantization=settings.draft_quantization,
                              cpu_isa=settings.draft_cpu_isa)
    if runner.arch.vocab_size != hello.target_vocab_size:
        raise ValueError(f"draft vocabulary {runner.arch.vocab_size} != target "
                         f"{hello.target_vocab_size}")
    stats = ServerStats(k, base=hello.stats_base)
    return DraftEngine(settings, runner, k, hello.max_num_seqs, max_len, stats)


def place_process(device, cpus: str | None) -> None:
    """CPU drafting: pin to the draft cores (default: the machine's last CPU)."""
    import torch

    if device.type != "cpu":
        return
    count = os.cpu_count() or 1
    cores = parse_cpu_list(cpus) if cpus else [count - 1]
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    logger.info("draft server pinned to CPUs %s", cores)
