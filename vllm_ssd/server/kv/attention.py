"""Paged attention for the draft model.

``TorchPagedAttention`` works on any device with plain PyTorch: it gathers each
sequence's key and value blocks through its block table into a padded batch (whole
blocks: one contiguous copy per block, not per token) and calls
``scaled_dot_product_attention`` with a causal, length-aware mask. Uniform batches
(every sequence the same number of new tokens, as in branch decoding) are reshaped
instead of scattered. The metadata is built once per forward pass and shared by all
layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vllm_ssd.server.kv.batch import TokenBatch


@dataclass
class PaddedAttentionMetadata:
    slot_mapping: torch.Tensor  # [T], KV slot each new token writes
    seq_of_token: torch.Tensor  # [T], sequence index of each new token
    row_of_token: torch.Tensor  # [T], query row inside the padded sequence
    key_blocks: torch.Tensor  # [S, NB], KV block of each run of key positions (0 unused)
    mask: torch.Tensor  # [S, 1, Qmax, NB * block_size] bool, True = attend
    max_query_len: int
    uniform: bool  # every sequence has max_query_len new tokens


class TorchPagedAttention:
    rope_and_cache = None  # rotary runs apart (see Attention.forward)

    def __init__(self, block_size: int):
        self.block_size = block_size

    def build(self, batch: TokenBatch) -> PaddedAttentionMetadata:
        device = batch.input_ids.device
        num_seqs = batch.query_lens.shape[0]
        seq_of_token = torch.repeat_interleave(
            torch.arange(num_seqs, device=device), batch.query_lens)  # [T]
        first_token = torch.cumsum(batch.query_lens, 0) - batch.query_lens  # [S]
        row_of_token = torch.arange(batch.num_tokens, device=device) - first_token[seq_of_token]
        num_blocks = min(-(-batch.max_context_len // self.block_size),
                         batch.block_tables.shape[1])
        key_pos = torch.arange(num_blocks * self.block_size, device=device)  # [L]
        query_start = batch.context_lens - batch.query_lens  # [S]
        query_pos = query_start[:, None] + torch.arange(batch.max_query_len, device=device)
        causal = key_pos[None, None, :] <= query_pos[:, :, None]  # [S, Qmax, Lmax]
        in_context = (key_pos[None, :] < batch.context_lens[:, None])[:, None, :]
        return PaddedAttentionMetadata(
            slot_mapping=batch.slot_mapping,
            seq_of_token=seq_of_token,
            row_of_token=row_of_token,
            key_blocks=batch.block_tables[:, :num_blocks].clamp(min=0),
            mask=(causal & in_context).unsqueeze(1),
            max_query_len=batch.max_query_len,
            uniform=batch.uniform_query_len is not None,
        )

    def forward(
        self,
        query: torch.Tensor,  # [T, H, D]
        key: torch.Tensor,  # [T, Hkv, D]
        value: torch.Tensor,  # [T, Hkv, D]
        key_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
        value_cache: torch.Tensor,  # [num_blocks, block_size, Hkv, D]
        meta: PaddedAttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [T, H, D]
        num_kv_heads, head_dim = key.shape[1], key.shape[2]
        flat_keys = key_cache.view(-1, num_kv_heads, head_dim)
        flat_values = value_cache.view(-1, num_kv_heads, head_dim)
        flat_keys.index_copy_(0, meta.slot_mapping, key)
        flat_values.index_copy_(0, meta.slot_mapping, value)
        num_seqs = meta.key_blocks.shape[0]
        if meta.uniform:
            padded_q = query.view(num_seqs, meta.max_query_len, *query.shape[1:])
        else:
            padded_q = query.new_zeros(num_seqs, meta.max_query_len, *query.shape[1:])
            padded_q[meta.seq_of_token, meta.row_of_token] = query  # [S, Qmax, H, D]
        keys = _gather_blocks(key_cache, meta.key_blocks)  # [S, L, Hkv, D]
        values = _gather_blocks(value_cache, meta.key_blocks)
        out = F.scaled_dot_product_attention(
            padded_q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
            attn_mask=meta.mask, scale=scale, enable_gqa=True).transpose(1, 2)  # [S, Qmax, H, D]
        if meta.uniform:
            return out.reshape(-1, *out.shape[2:])
        return out[meta.seq_of_token, meta.row_of_token]


def _gather_blocks(cache: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """cache [num_blocks, block_size, Hkv, D], blocks [S, NB] -> [S, NB * block_size, Hkv, D]
    (index_select copies whole rows: ~5x faster than advanced indexing on a CPU)."""
    rows = cache.view(cache.shape[0], -1).index_select(0, blocks.reshape(-1))
    return rows.view(blocks.shape[0], -1, *cache.shape[2:])
