"""Owns the draft model and its paged KV cache; runs one forward pass per call."""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from vllm_ssd.arch import ModelArch
from vllm_ssd.server.device_clock import to_device
from vllm_ssd.server.kv.attention import TorchPagedAttention
from vllm_ssd.server.kv.attention_cuda import FlashPagedAttention, flash_attention_available
from vllm_ssd.server.kv.batch import TokenBatch, make_token_batch
from vllm_ssd.server.kv.budget import kv_bytes_per_token
from vllm_ssd.server.model.cpu_kernel_choice import CpuKernelPlan, choose_cpu_kernels
from vllm_ssd.server.model.loader import load_draft_model, resolve_dtype

logger = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model_dir: str, device: torch.device, dtype_name: str,
                 num_blocks: int | Callable[[int], int], block_size: int, max_positions: int, dummy: bool,
                 quantization: str = "auto", cpu_isa: str = "auto",
                 sim_ms_per_token: float = 0.0):
        """sim_ms_per_token: each forward also sleeps this long per token (tests and
        benchmarks: a slower device)."""
        self.arch = ModelArch.from_dir(model_dir)
        self.device = device
        self.cpu_plan: CpuKernelPlan | None = None
        if device.type == "cpu":
            self.cpu_plan = _cpu_plan(self.arch, dtype_name, quantization, cpu_isa)
            self.dtype = self.cpu_plan.dtype
        else:
            self.dtype = resolve_dtype(dtype_name, self.arch)
        self.block_size = block_size
        self.bytes_per_block = block_size * kv_bytes_per_token(
            self.arch.num_layers, self.arch.num_kv_heads, self.arch.head_dim, self.dtype.itemsize)
        # num_blocks: a count, or a function of the bytes per block (a memory budget)
        self.num_blocks = num_blocks if isinstance(num_blocks, int) else \
            num_blocks(self.bytes_per_block)
        self.model = load_draft_model(model_dir, self.arch, self.dtype, device, max_positions,
                                      dummy, self.cpu_plan.linear if self.cpu_plan else "torch")
        # [layers, 2 (key/value), num_blocks, block_size, kv_heads, head_dim]
        self.kv_cache = torch.zeros(
            self.arch.num_layers, 2, self.num_blocks, block_size, self.arch.num_kv_heads,
            self.arch.head_dim, dtype=self.dtype, device=device)
        self.max_positions = max_positions
        if flash_attention_available(device, self.dtype):
            self.backend = FlashPagedAttention(block_size, device, self.dtype,
                                               self.arch.head_dim)
        else:
            self.backend = TorchPagedAttention(block_size)
        self.graphs = None
        self.sim_s_per_token = sim_ms_per_token / 1e3
        logger.info("draft model %s (%s, %d layers) on %s in %s; KV cache %d blocks x %d",
                    model_dir, self.arch.model_type, self.arch.num_layers, device,
                    self.dtype, self.num_blocks, block_size)

    def make_batch(self, input_ids: np.ndarray, query_lens: np.ndarray,
                   start_positions: np.ndarray, block_tables: np.ndarray,
                   logits_indices: np.ndarray) -> TokenBatch:
        return make_token_batch(input_ids, query_lens, start_positions, block_tables,
                                logits_indices, self.block_size, self.device)

    def capture_graphs(self, max_rows: dict[int, int], max_blocks: int) -> None:
        """CUDA graphs for uniform decode / glue batches (FlashAttention backend only);
        max_rows: query length -> most rows."""
        if not isinstance(self.backend, FlashPagedAttention):
            return
        from vllm_ssd.server.device.cuda_graphs import CudaGraphs
        self.graphs = CudaGraphs(self.model, self.kv_cache, max_rows, max_blocks,
                                      self.max_positions)
        self.graphs.capture(self.backend)

    @torch.inference_mode()
    def run(self, batch: TokenBatch) -> torch.Tensor:
        """Writes the batch's KV and returns float32 logits [L, vocab] at logits_indices."""
        if self.sim_s_per_token:
            time.sleep(self.sim_s_per_token * len(batch.input_ids))
        if self.graphs is not None:
            logits = self.graphs.run(batch)
            if logits is not None:
                return logits
        meta = self.backend.build(batch)
        hidden = self.model(batch.input_ids, batch.positions, self.kv_cache, self.backend, meta)
        return self.model.compute_logits(hidden[batch.logits_indices])

    @torch.inference_mode()
    def copy_blocks(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy-on-write: duplicates whole KV blocks src[i] -> dst[i] in every layer."""
        if len(src) == 0:
            return
        src_t = to_device(src.astype(np.int64), self.device)
        dst_t = to_device(dst.astype(np.int64), self.device)
        self.kv_cache[:, :, dst_t] = self.kv_cache[:, :, src_t]


def _cpu_plan(arch: ModelArch, dtype_name: str, quantization: str, cpu_isa: str) -> CpuKernelPlan:
    from vllm_ssd.cpu_isa import detect_cpu_isa

    isa = detect_cpu_isa().capped(cpu_isa)
    widest = (2 * arch.intermediate_size, arch.hidden_size)  # the fused gate/up projection
    plan = choose_cpu_kernels(isa, arch.torch_dtype, dtype_name, quantization, widest)
    logger.info("draft CPU kernels: %s", plan.describe())
    return plan
