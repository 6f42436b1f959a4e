"""Paged attention on CUDA with FlashAttention (vLLM ships FA3 as ``vllm.vllm_flash_attn``).

The KV cache layout ([num_blocks, block_size, kv_heads, head_dim] per layer) is the one
``flash_attn_varlen_func`` reads through a block table, so prefill, glue and branch
steps all run one varlen kernel per layer. Metadata tensors can be static buffers,
which is what CUDA-graph capture needs (see ``cuda_graphs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_ssd.server.kv.batch import TokenBatch
from vllm_ssd.server.model.rope_cache_cuda import fused_rope_and_cache


@dataclass
class FlashMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    cu_seqlens_q: torch.Tensor  # [S + 1] int32
    seqused_k: torch.Tensor  # [S] int32
    block_table: torch.Tensor  # [S, max_blocks] int32
    max_query_len: int
    max_context_len: int


def flash_attention_available(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return False
    try:
        from vllm.vllm_flash_attn import flash_attn_varlen_func  # noqa: F401
    except Exception:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


class FlashPagedAttention:
    """``num_splits``: FA3's split-KV count. 0 lets FA3 choose, and in a CUDA graph it sees
    the graph's maximum context, splits and adds a combine kernel per layer: a branch step
    of Qwen2.5-0.5B at 300 tokens of context took 1.47 ms with 0 and 1.26 ms with 1 on an
    H200 (`profile_draft.py --ablations`)."""

    num_splits = 1

    def __init__(self, block_size: int, device: torch.device, dtype: torch.dtype,
                 head_dim: int):
        from vllm.vllm_flash_attn import flash_attn_varlen_func

        self.block_size = block_size
        self.flash_attn_varlen_func = flash_attn_varlen_func
        self.fa_version = 3 if torch.cuda.get_device_capability(device)[0] == 9 else 2
        self.write_kv = _fused_kv_writer(device) or _index_copy_kv
        self.rope_and_cache = fused_rope_and_cache(device, dtype, head_dim)

    def build(self, batch: TokenBatch) -> FlashMetadata:
        cu_seqlens_q = torch.zeros(batch.query_lens.shape[0] + 1, dtype=torch.int32,
                                   device=batch.query_lens.device)
        cu_seqlens_q[1:] = torch.cumsum(batch.query_lens, 0)
        return FlashMetadata(
            slot_mapping=batch.slot_mapping, cu_seqlens_q=cu_seqlens_q,
            seqused_k=batch.context_lens.to(torch.int32),
            block_table=batch.block_tables.clamp(min=0).to(torch.int32),
            max_query_len=batch.max_query_len, max_context_len=batch.max_context_len)

    def forward(self, query, key, value, key_cache, value_cache, meta: FlashMetadata,
                scale: float) -> torch.Tensor:
        # query [T, H, D]; key, value [T, Hkv, D]; caches [num_blocks, block_size, Hkv, D]
        self.write_kv(key, value, key_cache, value_cache, meta.slot_mapping)
        return self.attend(query, key_cache, value_cache, meta, scale)

    def rotary_forward(self, query, key, value, positions, cos_sin, key_cache, value_cache,
                       meta: FlashMetadata, scale: float) -> torch.Tensor:
        """Rotary + KV write in one kernel, then attention (needs ``rope_and_cache``)."""
        self.rope_and_cache(query, key, value, positions, cos_sin, key_cache, value_cache,
                            meta.slot_mapping)
        return self.attend(query, key_cache, value_cache, meta, scale)

    def attend(self, query, key_cache, value_cache, meta: FlashMetadata, scale: float):
        splits = {"num_splits": self.num_splits} if self.fa_version == 3 else {}
        return self.flash_attn_varlen_func(
            query, key_cache, value_cache, meta.max_query_len, meta.cu_seqlens_q,
            meta.max_context_len, seqused_k=meta.seqused_k, softmax_scale=scale, causal=True,
            block_table=meta.block_table, fa_version=self.fa_version, **splits)


def _index_copy_kv(key, value, key_cache, value_cache, slot_mapping) -> None:
    # key, value [T, Hkv, D] -> caches [num_blocks, block_size, Hkv, D] at slots [T]
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, key)
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, value)


def _fused_kv_writer(device: torch.device):
    """vLLM's reshape_and_cache_flash (one kernel for key and value) when it is present and
    writes exactly what index_copy writes on a small probe; else None."""
    try:
        import vllm._custom_ops  # noqa: F401  (loads torch.ops._C_cache_ops)
        op = torch.ops._C_cache_ops.reshape_and_cache_flash
        scale = torch.ones((), dtype=torch.float32, device=device)

        def write(key, value, key_cache, value_cache, slot_mapping) -> None:
            op(key, value, key_cache, value_cache, slot_mapping, "auto", scale, scale)
        qkv = torch.randn(5, 3, 2, 64, dtype=torch.bfloat16, device=device)
        slots = torch.tensor([0, 17, 3, 30, 9], dtype=torch.int64, device=device)
        caches = [torch.zeros(2, 2, 16, 2, 64, dtype=torch.bfloat16, device=device)
                  for _ in range(2)]
        write(qkv[:, 1], qkv[:, 2], caches[0][0], caches[0][1], slots)  # strided views
        _index_copy_kv(qkv[:, 1], qkv[:, 2], caches[1][0], caches[1][1], slots)
        if torch.equal(caches[0], caches[1]):
            return write
    except Exception:  # an older or different extension: index_copy it is
        pass
    return None
