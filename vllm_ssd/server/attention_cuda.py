"""Paged attention on CUDA with FlashAttention (vLLM ships FA3 as ``vllm.vllm_flash_attn``).

The KV cache layout ([num_blocks, block_size, kv_heads, head_dim] per layer) is the one
``flash_attn_varlen_func`` reads through a block table, so prefill, glue and branch
steps all run one varlen kernel per layer. Metadata tensors can be static buffers,
which is what CUDA-graph capture needs (see ``cuda_graphs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_ssd.server.batch import TokenBatch


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
    def __init__(self, block_size: int, device: torch.device):
        from vllm.vllm_flash_attn import flash_attn_varlen_func

        self.block_size = block_size
        self.flash_attn_varlen_func = flash_attn_varlen_func
        self.fa_version = 3 if torch.cuda.get_device_capability(device)[0] == 9 else 2

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
        num_kv_heads, head_dim = key.shape[1], key.shape[2]
        key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, key)
        value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, meta.slot_mapping, value)
        return self.flash_attn_varlen_func(
            query, key_cache, value_cache, meta.max_query_len, meta.cu_seqlens_q,
            meta.max_context_len, seqused_k=meta.seqused_k, softmax_scale=scale, causal=True,
            block_table=meta.block_table, fa_version=self.fa_version)
