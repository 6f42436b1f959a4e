"""Builds the speculation cache while the target verifies the drafts just sent.

1. glue pass: one forward over [t*_prev, s1..sK] per request at their real
   positions; writes their draft KV and yields K+1 rows of draft logits;
2. fork: at position j take the top-F_j tokens of row j as candidate t*,
   excluding the drafted token s_{j+1} for j < K;
3. branch decode: D batched steps over every branch of every request; branch
   (j, t) shares the request's KV below position N + j and owns the rest
   (copy-on-write fork of the request's blocks);
4. populate: cache[(slot, j, t)] = the branch's drafts, kept even when a new
   step arrives mid-build (a shallower hit is still a hit).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vllm_ssd.server.block_manager import BlockManager
from vllm_ssd.server.drafter import Drafter
from vllm_ssd.server.spec_cache import SpeculationCache
from vllm_ssd.server.state import RequestTable


@dataclass
class BuildReport:
    num_rows: int = 0
    num_branches: int = 0
    depth_done: int = 0
    glue_s: float = 0.0
    branch_s: float = 0.0


@dataclass
class Branches:
    slots: np.ndarray  # [N]
    k: np.ndarray  # [N] fork position (accepted drafts this branch assumes)
    rank: np.ndarray  # [N] rank among the candidates of (slot, k)
    tokens: np.ndarray  # [N] the guessed t*


class CacheBuilder:
    def __init__(self, drafter: Drafter, table: RequestTable, cache: SpeculationCache,
                 blocks: BlockManager, prefill_chunk: int = 1 << 30):
        """prefill_chunk: catch-up tokens (new prompts) per build; longer catch-ups are
        prefilled a chunk per round, so that no build blocks the next step for long."""
        self.drafter = drafter
        self.prefill_chunk = prefill_chunk
        self.table = table
        self.cache = cache
        self.blocks = blocks
        self.branch_tables = np.zeros((0, table.block_tables.shape[1]), dtype=np.int32)

    def release_branches(self) -> None:
        """Frees last round's branch KV (their drafts stay in the cache until cleared)."""
        self.blocks.free(self.branch_tables.ravel())
        self.branch_tables = self.branch_tables[:0]

    def build(self, slots: np.ndarray, fanout: np.ndarray, depth: int,
              stop: Callable[[], bool]) -> BuildReport:
        """fanout [R, max_drafts + 1]: F_j for each row; depth: drafts per branch."""
        report = BuildReport(num_rows=len(slots))
        self.cache.clear(slots)
        if len(slots) == 0:
            return report
        start = time.perf_counter()
        slots = self.prefill_chunks(slots)
        if len(slots) == 0:
            report.glue_s = time.perf_counter() - start
            return report
        num_drafts = self.table.num_drafts[slots]
        logits = self.drafter.extend(self.table, slots, num_drafts + 1)
        branches = self.fork(slots, logits, num_drafts, fanout)
        report.glue_s = time.perf_counter() - start
        report.num_branches = len(branches.slots)
        if report.num_branches == 0:
            return report
        start = time.perf_counter()
        report.depth_done = self.decode_branches(branches, depth, stop)
        report.branch_s = time.perf_counter() - start
        return report

    def prefill_chunks(self, slots: np.ndarray) -> np.ndarray:
        """Advances long catch-ups by one chunk (shared by the long rows); returns the
        slots ready for a glue pass this round."""
        table = self.table
        catch_up = table.num_tokens[slots] + table.num_drafts[slots] - \
            np.minimum(table.path_cached[slots], table.num_tokens[slots] - 1)
        long = catch_up > max(self.prefill_chunk, table.max_drafts + 1)
        num_long = int(long.sum())
        if num_long:
            chunk = max(self.prefill_chunk // num_long, 1)
            self.drafter.extend(table, slots[long], np.zeros(num_long, dtype=np.int64),
                                np.full(num_long, chunk))
        return slots[~long]

    def fork(self, slots: np.ndarray, logits: torch.Tensor, num_drafts: np.ndarray,
             fanout: np.ndarray) -> Branches:
        """Picks the candidate t* of every (row, position) from the glue logits."""
        rows_per_slot = num_drafts + 1
        row = np.repeat(np.arange(len(slots)), rows_per_slot)  # logit row -> batch row
        position = np.arange(len(row)) - np.repeat(np.cumsum(rows_per_slot) - rows_per_slot,
                                                   rows_per_slot)  # j
        max_f = int(fanout.max(initial=0))
        if max_f == 0:
            return Branches(*(np.zeros(0, dtype=np.int64) for _ in range(4)))
        num_candidates = min(max_f + 1, logits.shape[-1])
        candidates = logits.topk(num_candidates, dim=-1).indices.cpu().numpy()  # [L, F+1]
        drafted = self.table.drafts[slots[row], np.minimum(position, self.table.max_drafts - 1)]
        excluded = np.where(position < num_drafts[row], drafted, -1)
        usable = candidates != excluded[:, None]
        rank = np.cumsum(usable, axis=1) - 1
        keep = usable & (rank < fanout[row, position][:, None])
        logit_row, column = np.nonzero(keep)
        return Branches(slots[row[logit_row]], position[logit_row], rank[logit_row, column],
                        candidates[logit_row, column].astype(np.int64))

    def decode_branches(self, branches: Branches, depth: int, stop: Callable[[], bool]) -> int:
        fork_lens = self.table.num_tokens[branches.slots] + branches.k  # positions shared
        tables, cow_src, cow_dst = self.blocks.fork(
            self.table.block_tables[branches.slots], fork_lens, depth)
        self.drafter.runner.copy_blocks(cow_src, cow_dst)
        self.branch_tables = tables
        self.cache.insert_keys(branches.slots, branches.k, branches.rank, branches.tokens)
        device = self.drafter.runner.device
        roots = torch.from_numpy(branches.tokens).to(device)
        temps = self.table.temperature[branches.slots]
        # the first branch step always runs: a one-token hit beats a miss
        tokens = self.drafter.decode(tables, fork_lens, roots, temps, depth,
                                     self.drafter_top_f(), stop, min_steps=1)
        done = tokens.shape[1] - 1
        if done > 0:
            self.cache.record_drafts(branches.slots, branches.k, branches.rank,
                                     tokens[:, 1:].cpu().numpy(), done)
        return done

    def drafter_top_f(self) -> int:
        return self.cache.keys.shape[2]
