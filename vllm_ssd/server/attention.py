"""Paged attention for the draft model.

``TorchPagedAttention`` works on any device with plain PyTorch: it gathers each
sequence's keys and values through its block table into a padded batch and calls
``scaled_dot_product_attention`` with a causal, length-aware mask. The metadata
is built once per forward pass and shared by all layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vllm_ssd.server.batch import TokenBatch


@dataclass
class PaddedAttentionMetadata:
    slot_mapping: torch.Tensor  # [T], KV slot each new token writes
    seq_of_token: torch.Tensor  # [T], sequence index of each new token
    row_of_token: torch.Tensor  # [T], query row inside the padded sequence
    key_slots: torch.Tensor  # [S, Lmax], KV slot of each key position (0 where masked)
    mask: torch.Tensor  # [S, 1, Qmax, Lmax] bool, True = attend
    max_query_len: int


class TorchPagedAttention:
    def __init__(self, block_size: int):
        self.block_size = block_size

    def build(self, batch: TokenBatch) -> PaddedAttentionMetadata:
        device = batch.input_ids.device
        num_seqs = batch.query_lens.shape[0]
        seq_of_token = torch.repeat_interleave(
            torch.arange(num_seqs, device=device), batch.query_lens)  # [T]
        first_token = torch.cumsum(batch.query_lens, 0) - batch.query_lens  # [S]
        row_of_token = torch.arange(batch.num_tokens, device=device) - first_token[seq_of_token]
        key_pos = torch.arange(batch.max_context_len, device=device)  # [Lmax]
        block_idx = (key_pos // self.block_size).clamp(max=batch.block_tables.shape[1] - 1)
        blocks = batch.block_tables[:, block_idx]  # [S, Lmax]
        key_slots = (blocks * self.block_size + key_pos % self.block_size).clamp(min=0)
        query_start = batch.context_lens - batch.query_lens  # [S]
        query_pos = query_start[:, None] + torch.arange(batch.max_query_len, device=device)
        causal = key_pos[None, None, :] <= query_pos[:, :, None]  # [S, Qmax, Lmax]
        in_context = (key_pos[None, :] < batch.context_lens[:, None])[:, None, :]
        return PaddedAttentionMetadata(
            slot_mapping=batch.slot_mapping,
            seq_of_token=seq_of_token,
            row_of_token=row_of_token,
            key_slots=key_slots,
            mask=(causal & in_context).unsqueeze(1),
            max_query_len=batch.max_query_len,
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
        num_seqs = meta.key_slots.shape[0]
        padded_q = query.new_zeros(num_seqs, meta.max_query_len, *query.shape[1:])
        padded_q[meta.seq_of_token, meta.row_of_token] = query  # [S, Qmax, H, D]
        keys = flat_keys[meta.key_slots]  # [S, Lmax, Hkv, D]
        values = flat_values[meta.key_slots]
        out = F.scaled_dot_product_attention(
            padded_q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
            attn_mask=meta.mask, scale=scale, enable_gqa=True)  # [S, H, Qmax, D]
        return out.transpose(1, 2)[meta.seq_of_token, meta.row_of_token]
