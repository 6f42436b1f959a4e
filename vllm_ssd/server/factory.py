"""Builds a draft engine from the settings and the proposer's handshake: device placement,
the draft KV cache's budget, the model, the engine. Tests and benchmarks build engines here
too, without a socket."""
from __future__ import annotations

import logging
import os

from vllm_ssd import protocol as P
from vllm_ssd.server.kv import budget
from vllm_ssd.settings import SSDSettings

logger = logging.getLogger(__name__)


def row_positions(max_model_len: int, num_speculative_tokens: int) -> int:
    """Positions one request can hold in the draft: the target's limit, then one round of
    drafts and its bonus token past the last committed one, and one token of slack."""
    return max_model_len + num_speculative_tokens + 2


def build_engine(settings: SSDSettings, hello: P.Hello):
    import torch

    from vllm_ssd.server.device.model_runner import ModelRunner
    from vllm_ssd.server.engine import StepEngine
    from vllm_ssd.server.memory_report import log_memory, release_free_heap, resident_bytes
    from vllm_ssd.server.stats import ServerStats

    before_load = resident_bytes()
    device = torch.device("cpu" if settings.draft_device == "auto" else settings.draft_device)
    place_process(device, settings.draft_cpu_list())
    if device.type == "cuda":
        if device.index is None:  # "cuda": the process's current device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # graphs capture on the current device's stream
    k = hello.num_speculative_tokens
    max_len = row_positions(hello.max_model_len, k)
    sizing = kv_sizing(settings, hello, device, max_len)
    runner = ModelRunner(settings.draft_model, device, settings.draft_dtype, sizing,
                              settings.block_size, max_len + k + 1,
                              dummy=settings.load_format == "dummy",
                              quantization=settings.draft_quantization,
                              cpu_isa=settings.draft_cpu_isa,
                              sim_ms_per_token=settings.sim_ms_per_token)
    if runner.arch.vocab_size != hello.target_vocab_size:
        raise ValueError(f"draft vocabulary {runner.arch.vocab_size} != target "
                         f"{hello.target_vocab_size}")
    stats = ServerStats(k, base=hello.stats_base)
    release_free_heap()
    log_memory(runner.model, runner.kv_cache, before_load)
    return StepEngine(settings, runner, k, hello.max_num_seqs, max_len, stats,
                      core_gain=hello.core_gain, shares_target_gpu=hello.shares_target_gpu)


def kv_sizing(settings: SSDSettings, hello: P.Hello, device, max_len: int):
    """bytes per block -> blocks of the draft KV cache, from the budget (see ``kv.budget``),
    with the free memory read now, before the draft's weights load."""
    needed = budget.needed_blocks(hello.max_num_seqs, max_len, hello.num_speculative_tokens,
                                  settings.block_size, settings.fanout_budget)
    target_kv = budget.target_cpu_kv_bytes() if device.type == "cpu" else 0
    default = budget.default_budget_bytes(device.type, budget.free_memory_bytes(device),
                                          target_kv)

    def blocks_for(bytes_per_block: int) -> int:
        sizing = budget.size_kv_cache(needed, bytes_per_block, settings.block_size,
                                      settings.kv_cache_gb, settings.kv_cache_tokens, default)
        logger.info("%s", sizing.describe(settings.block_size))
        return sizing.num_blocks
    return blocks_for


def place_process(device, cores: list[int]) -> None:
    """CPU drafting: pin to the draft cores (``SSDSettings.draft_cpu_list``)."""
    import torch

    if device.type != "cpu":
        return
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    logger.info("draft server pinned to CPUs %s", cores)
