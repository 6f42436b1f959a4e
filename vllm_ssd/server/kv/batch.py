"""The input of one draft forward pass: S sequences, each with a run of new tokens.

A "sequence" is anything with its own block table: a request's main context
(prefill, catch-up, glue pass) or one speculation branch. Positions are
logical token positions; block tables map them to KV slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_ssd.server.device_clock import to_device
from vllm_ssd.server.segments import segment_offsets


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    query_lens: torch.Tensor  # [S] int64, new tokens per sequence
    context_lens: torch.Tensor  # [S] int64, KV length of each sequence after this pass
    block_tables: torch.Tensor  # [S, max_blocks] int64, -1 = unused
    slot_mapping: torch.Tensor  # [T] int64, KV slot written by each new token
    logits_indices: torch.Tensor  # [L] int64, rows of T whose logits are wanted
    max_query_len: int
    max_context_len: int
    uniform_query_len: int | None = None  # every sequence has this many new tokens

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def make_token_batch(
    input_ids: np.ndarray | torch.Tensor,  # [T] (a device tensor stays on the device)
    query_lens: np.ndarray,  # [S]
    start_positions: np.ndarray,  # [S], position of each sequence's first new token
    block_tables: np.ndarray,  # [S, max_blocks]
    logits_indices: np.ndarray,  # [L]
    block_size: int,
    device: torch.device,
) -> TokenBatch:
    query_lens = query_lens.astype(np.int64)
    seq_of_token = np.repeat(np.arange(len(query_lens)), query_lens)  # [T]
    offset_in_seq = segment_offsets(query_lens)  # [T]
    positions = start_positions.astype(np.int64)[seq_of_token] + offset_in_seq  # [T]
    blocks = block_tables[seq_of_token, positions // block_size].astype(np.int64)  # [T]
    if (blocks < 0).any():
        raise RuntimeError("draft KV slot requested in an unallocated block")
    slot_mapping = blocks * block_size + positions % block_size
    context_lens = start_positions.astype(np.int64) + query_lens

    # one host-to-device copy for all index arrays (and host token ids), sliced into views
    parts = [positions, query_lens, context_lens, slot_mapping, logits_indices.astype(np.int64),
             block_tables.astype(np.int64).ravel()]
    on_host = not isinstance(input_ids, torch.Tensor)
    if on_host:
        parts.append(np.asarray(input_ids, dtype=np.int64))
    packed = to_device(np.concatenate(parts), device)
    positions_d, query_lens_d, context_lens_d, slots_d, logits_d, tables_d, *ids_d = \
        torch.split(packed, [len(p) for p in parts])
    return TokenBatch(
        input_ids=ids_d[0] if on_host else input_ids.to(device=device, dtype=torch.int64),
        positions=positions_d,
        query_lens=query_lens_d,
        context_lens=context_lens_d,
        slot_mapping=slots_d,
        logits_indices=logits_d,
        block_tables=tables_d.view(block_tables.shape),
        max_query_len=int(query_lens.max(initial=0)),
        max_context_len=int(context_lens.max(initial=0)),
        uniform_query_len=int(query_lens[0]) if len(query_lens) and
        (query_lens == query_lens[0]).all() else None,
    )
