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

Nothing here waits for the device: the branch structure (slot, j, rank) follows from
the fan-out alone, the guessed tokens and drafts stay on the device and come back in
one non-blocking copy, which ``collect`` (at the next step, before the lookup) waits
for: one host sync per round. Build times are measured between device marks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vllm_ssd.server.device_clock import DeviceClock, to_device
from vllm_ssd.server.draft_passes import DraftPasses
from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.segments import segment_offsets
from vllm_ssd.server.speculation.prefill_pacer import PrefillPacer
from vllm_ssd.server.speculation.spec_cache import SpeculationCache
from vllm_ssd.server.state import RequestTable


@dataclass
class BuildReport:
    num_rows: int = 0
    num_branches: int = 0
    depth_done: int = 0
    glue_s: float = 0.0
    branch_s: float = 0.0
    wait_s: float = 0.0  # host time the next step waited for the build's last step


@dataclass
class Branches:
    slots: np.ndarray  # [N]
    k: np.ndarray  # [N] fork position (accepted drafts this branch assumes)
    rank: np.ndarray  # [N] rank among the candidates of (slot, k)
    tokens: torch.Tensor  # [N] the guessed t*, on the draft device


@dataclass
class PendingBuild:
    """A build whose guesses and drafts are still on their way from the device."""
    report: BuildReport
    marks: tuple  # device marks: start, glue done, branches done (and copied to the host)
    branches: Branches | None = None
    host_tokens: torch.Tensor | None = None  # [N, 1 + depth_done]: t*, then the drafts


class CacheBuilder:
    def __init__(self, passes: DraftPasses, table: RequestTable, cache: SpeculationCache,
                 blocks: BlockManager, pacer: PrefillPacer | None = None):
        """pacer: catch-up tokens (new prompts) per build; longer catch-ups are prefilled
        a chunk per round, so that no build blocks the next step for long."""
        self.passes = passes
        self.pacer = pacer or PrefillPacer(1 << 30)
        self.table = table
        self.cache = cache
        self.blocks = blocks
        self.branch_tables = np.zeros((0, table.block_tables.shape[1]), dtype=np.int32)
        self.clock = passes.clock if passes else DeviceClock(torch.device("cpu"))
        self.pending: PendingBuild | None = None

    def release_branches(self) -> None:
        """Frees last round's branch KV (their drafts stay in the cache until cleared)."""
        self.blocks.free(self.branch_tables.ravel())
        self.branch_tables = self.branch_tables[:0]

    def build(self, slots: np.ndarray, fanout: np.ndarray, depth: int,
              stop: Callable[[], bool], while_glue_runs: Callable[[], None] = lambda: None,
              target_step_s: float = 0.0) -> None:
        """fanout [R, max_drafts + 1]: F_j for each row; depth: drafts per branch.
        Queues the work; ``collect`` fills the cache. ``while_glue_runs``: host work to do
        once the glue pass and the fork are queued on the device."""
        self.cache.clear(slots)
        report = BuildReport(num_rows=len(slots))
        if len(slots) == 0:
            while_glue_runs()
            return
        start = self.clock.mark()
        slots = self.prefill_chunks(slots, target_step_s)
        branches = None
        if len(slots):
            num_drafts = self.table.num_drafts[slots]
            logits = self.passes.extend(self.table, slots, num_drafts + 1)
            branches = self.fork(slots, logits, num_drafts, fanout)
            report.num_branches = len(branches.slots)
        glue_done = self.clock.mark()
        while_glue_runs()
        tokens = None
        if report.num_branches:
            tokens = self.decode_branches(branches, depth, stop)  # [N, 1 + done]
            report.depth_done = tokens.shape[1] - 1
            tokens = self.clock.download(tokens)
        marks = (start, glue_done, self.clock.mark())
        self.pending = PendingBuild(report, marks, branches, tokens)

    def collect(self) -> BuildReport | None:
        """Waits for the last build (the round's host sync), fills the cache with its
        guesses and drafts, and returns its report (None if there was none)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        start, glue_done, end = pending.marks
        waited = time.perf_counter()
        self.clock.wait(end)
        report = pending.report
        report.wait_s = time.perf_counter() - waited
        report.glue_s = self.clock.seconds(start, glue_done)
        report.branch_s = self.clock.seconds(glue_done, end)
        if pending.host_tokens is not None:
            tokens = pending.host_tokens.numpy()
            b = pending.branches
            self.cache.insert_keys(b.slots, b.k, b.rank, tokens[:, 0])
            if report.depth_done:
                self.cache.record_drafts(b.slots, b.k, b.rank, tokens[:, 1:], report.depth_done)
        return report

    def prefill_chunks(self, slots: np.ndarray, target_step_s: float = 0.0) -> np.ndarray:
        """Advances long catch-ups by one chunk, given to the rows closest to caught up
        first (each that finishes drafts from the next round); returns the slots ready for
        a glue pass this round."""
        table = self.table
        catch_up = table.num_tokens[slots] + table.num_drafts[slots] - table.first_uncached(slots)
        chunk_tokens = self.pacer.chunk_tokens(target_step_s)
        long = catch_up > max(chunk_tokens, table.max_drafts + 1)
        if long.any():
            rows = np.nonzero(long)[0][np.argsort(catch_up[long], kind="stable")]
            before = np.cumsum(catch_up[rows]) - catch_up[rows]  # tokens given to earlier rows
            allotted = np.clip(chunk_tokens - before, 0, catch_up[rows])  # [L]
            rows, allotted = rows[allotted > 0], allotted[allotted > 0]
            start = time.perf_counter()  # a timed pacer runs on a CPU: passes are synchronous
            self.passes.extend(table, slots[rows], np.zeros(len(rows), dtype=np.int64),
                               allotted)
            self.pacer.observe(int(allotted.sum()), time.perf_counter() - start)
        return slots[~long]

    def fork(self, slots: np.ndarray, logits: torch.Tensor, num_drafts: np.ndarray,
             fanout: np.ndarray) -> Branches:
        """Picks the candidate t* of every (row, position) from the glue logits [L, V]:
        the top tokens of the row, the drafted token s_{j+1} excluded for j < K."""
        rows_per_slot = num_drafts + 1
        row = np.repeat(np.arange(len(slots)), rows_per_slot)  # logit row -> batch row
        position = segment_offsets(rows_per_slot)  # j
        has_excluded = position < num_drafts[row]
        max_f = int(fanout.max(initial=0))
        num_candidates = min(max_f + 1, logits.shape[-1])
        counts = np.minimum(fanout[row, position], num_candidates - has_excluded)  # [L]
        logit_row = np.repeat(np.arange(len(row)), counts)  # [N]
        rank = segment_offsets(counts)
        if len(logit_row) == 0:
            return Branches(*(np.zeros(0, dtype=np.int64) for _ in range(3)),
                            torch.zeros(0, dtype=torch.int64, device=logits.device))
        drafted = self.table.drafts[slots[row], np.minimum(position, self.table.max_drafts - 1)]
        excluded = to_device(np.where(has_excluded, drafted, -1).astype(np.int64), logits.device)
        candidates = logits.topk(num_candidates, dim=-1).indices  # [L, F+1]
        usable = (candidates != excluded[:, None]).to(torch.int8)
        order = torch.sort(usable, dim=1, descending=True, stable=True).indices
        compact = candidates.gather(1, order)  # [L, F+1] usable candidates first
        index = to_device(np.stack([logit_row, rank]).astype(np.int64), logits.device)  # [2, N]
        return Branches(slots[row[logit_row]], position[logit_row], rank,
                        compact[index[0], index[1]])

    def decode_branches(self, branches: Branches, depth: int,
                        stop: Callable[[], bool]) -> torch.Tensor:
        """Decodes every branch from its root; returns tokens [N, 1 + done] on the device."""
        fork_lens = self.table.num_tokens[branches.slots] + branches.k  # positions shared
        tables, cow_src, cow_dst = self.blocks.fork(
            self.table.block_tables[branches.slots], fork_lens, depth)
        self.passes.runner.copy_blocks(cow_src, cow_dst)
        self.branch_tables = tables
        temps = self.table.temperature[branches.slots]
        # the first branch step always runs: a one-token hit beats a miss
        return self.passes.decode(tables, fork_lens, branches.tokens, temps, depth,
                                   self.cache_width, stop, min_steps=1)

    @property
    def cache_width(self) -> int:
        """Branches the cache holds per (row, k): the top-F of Saguaro sampling."""
        return self.cache.keys.shape[2]
