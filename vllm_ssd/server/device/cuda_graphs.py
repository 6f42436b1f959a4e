"""CUDA graphs for the draft's uniform batches: every sequence with the same query
length (1 for branch and just-in-time decode steps, K+1 for a steady-state glue pass).

One graph per (query length, row bucket), captured largest first into one memory pool.
Replay copies the batch into static buffers; rows beyond the batch are padding that
write into the reserved block 0 and attend to nothing. Mixed batches (prefill,
catch-up) run eagerly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vllm_ssd.server.kv.attention_cuda import FlashMetadata
from vllm_ssd.server.kv.batch import TokenBatch

logger = logging.getLogger(__name__)
BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def graph_rows(max_slots: int, fanout_budget: int, max_drafts: int) -> dict[int, int]:
    """Query length -> most rows, for every batch the engine runs uniformly: query length 1
    (branch and just-in-time decode steps, up to every slot's branches) and 2 .. K + 1
    (glue passes and short catch-ups, right-padded to the longest row: a glue pass after
    k accepted drafts has k + 1 tokens)."""
    return {1: max_slots * fanout_budget, **{q: max_slots for q in range(2, max_drafts + 2)}}


@dataclass
class CapturedGraph:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: FlashMetadata  # static buffers
    logits: torch.Tensor  # [T, vocab]
    padding_slots: torch.Tensor  # [T] KV slots of padding tokens: block 0, token % block size


class CudaGraphs:
    def __init__(self, model, kv_cache: torch.Tensor, max_rows: dict[int, int],
                 max_blocks: int, max_context: int):
        """max_rows: query length -> most rows a batch of that query length can have."""
        self.model = model
        self.kv_cache = kv_cache
        self.max_blocks = max_blocks
        self.max_context = max_context
        self.buckets = {q: [b for b in BUCKETS if b < rows] + [min(rows, BUCKETS[-1])]
                        for q, rows in max_rows.items()}
        self.graphs: dict[tuple[int, int], CapturedGraph] = {}

    @torch.inference_mode()
    def capture(self, backend) -> None:
        pool = None
        for query_len, buckets in self.buckets.items():
            for rows in reversed(buckets):
                captured = self._capture_one(backend, query_len, rows, pool)
                pool = captured.graph.pool()
                self.graphs[(query_len, rows)] = captured
        logger.info("captured %d CUDA graphs (rows by query length: %s)", len(self.graphs),
                    {q: b[-1] for q, b in self.buckets.items()})

    def _capture_one(self, backend, query_len: int, rows: int, pool) -> CapturedGraph:
        device = self.kv_cache.device
        tokens = rows * query_len
        meta = FlashMetadata(
            slot_mapping=torch.arange(tokens, device=device) % backend.block_size,
            cu_seqlens_q=torch.arange(rows + 1, dtype=torch.int32, device=device) * query_len,
            seqused_k=torch.full((rows,), query_len, dtype=torch.int32, device=device),
            block_table=torch.zeros(rows, self.max_blocks, dtype=torch.int32, device=device),
            max_query_len=query_len, max_context_len=self.max_context)
        input_ids = torch.zeros(tokens, dtype=torch.int64, device=device)
        positions = torch.zeros(tokens, dtype=torch.int64, device=device)

        def forward():
            hidden = self.model(input_ids, positions, self.kv_cache, backend, meta)
            return self.model.compute_logits(hidden)
        forward()  # warm-up (kernel selection, allocations) outside the graph
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            logits = forward()
        return CapturedGraph(graph, input_ids, positions, meta, logits,
                             meta.slot_mapping.clone())

    def run(self, batch: TokenBatch) -> torch.Tensor | None:
        """Replays a graph for a uniform batch; None when none fits (run eagerly)."""
        query_len = batch.uniform_query_len
        rows = batch.query_lens.shape[0]
        bucket = next((b for b in self.buckets.get(query_len, ()) if b >= rows), None)
        if query_len is None or bucket is None or (query_len, bucket) not in self.graphs:
            return None
        captured = self.graphs[(query_len, bucket)]
        tokens = rows * query_len
        meta = captured.meta
        captured.input_ids[:tokens].copy_(batch.input_ids)
        captured.positions[:tokens].copy_(batch.positions)
        meta.slot_mapping[:tokens].copy_(batch.slot_mapping)
        meta.seqused_k[:rows].copy_(batch.context_lens)
        width = batch.block_tables.shape[1]
        meta.block_table[:rows, :width].copy_(batch.block_tables)
        meta.block_table[:rows, :width].clamp_(min=0)
        if rows < bucket:  # padding rows: block 0, nothing to attend to
            meta.slot_mapping[tokens:].copy_(captured.padding_slots[tokens:])
            meta.seqused_k[rows:].fill_(0)
            meta.block_table[rows:].fill_(0)
        captured.graph.replay()
        return captured.logits[batch.logits_indices]
