"""Per-request state of the draft server, one row per slot, updated with numpy.

For each slot: the committed tokens, the drafts returned last round, and how far
the draft KV cache is valid along the *path* ``tokens + drafts`` (positions
[0, path_cached) hold KV of exactly those tokens). The table owns that rule: forwards read
it through ``first_uncached`` / ``uncached_tokens`` and record what they wrote with
``mark_cached``; a delta cuts it to the drafts it kept (``apply_deltas``) and an eviction
to nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.segments import segment_offsets

# Which speculator produced a row's current drafts (``RequestTable.draft_source``).
SOURCE_NONE, SOURCE_CACHE, SOURCE_NEURAL, SOURCE_NGRAM = 0, 1, 2, 3


@dataclass
class Outcomes:
    """What the target's verification did to each row of a step."""
    num_accepted: np.ndarray  # [R] k: drafts accepted (valid where is_outcome)
    bonus_token: np.ndarray  # [R] t*: the token the target sampled after them
    is_outcome: np.ndarray  # [R] bool: the delta is exactly "k accepted drafts + t*"
    num_proposed: np.ndarray  # [R] drafts proposed for this row last round


class RequestTable:
    def __init__(self, max_slots: int, max_len: int, max_drafts: int, blocks: BlockManager):
        self.max_len = max_len
        self.max_drafts = max_drafts
        self.blocks = blocks
        max_blocks = -(-(max_len + max_drafts + 1) // blocks.block_size)
        self.active = np.zeros(max_slots, dtype=bool)
        self.tokens = np.zeros((max_slots, max_len + max_drafts + 1), dtype=np.int32)
        self.num_tokens = np.zeros(max_slots, dtype=np.int64)
        self.drafts = np.full((max_slots, max_drafts), -1, dtype=np.int32)
        self.num_drafts = np.zeros(max_slots, dtype=np.int64)
        self.path_cached = np.zeros(max_slots, dtype=np.int64)
        self.draft_source = np.zeros(max_slots, dtype=np.int64)
        self.temperature = np.zeros(max_slots, dtype=np.float32)
        self.block_tables = np.full((max_slots, max_blocks), -1, dtype=np.int32)
        self.num_blocks = np.zeros(max_slots, dtype=np.int64)

    def activate(self, slots: np.ndarray, temperature: np.ndarray) -> None:
        self.release(slots[self.active[slots]])
        self.active[slots] = True
        self.temperature[slots] = temperature
        for array in (self.num_tokens, self.num_drafts, self.path_cached, self.draft_source):
            array[slots] = 0

    def release(self, slots: np.ndarray) -> None:
        """Frees the KV blocks of finished, aborted or preempted requests."""
        slots = slots[self.active[slots]]
        self.evict(slots)
        self.active[slots] = False

    def evict(self, slots: np.ndarray) -> None:
        """Gives back the KV blocks of still active rows: their KV is rebuilt from the
        committed tokens (a catch-up) once they are admitted again."""
        self.blocks.free(self.block_tables[slots].ravel())
        self.block_tables[slots] = -1
        self.num_blocks[slots] = 0
        self.path_cached[slots] = 0

    def first_uncached(self, slots: np.ndarray) -> np.ndarray:
        """[R] the first path position a forward must run from: the first whose KV is not
        valid, and at most the last committed token (its logits give the first draft)."""
        return np.minimum(self.path_cached[slots], self.num_tokens[slots] - 1)

    def uncached_tokens(self, slots: np.ndarray) -> np.ndarray:
        """[R] committed tokens without valid KV (a catch-up when above K + 1)."""
        return self.num_tokens[slots] - self.path_cached[slots]

    def mark_cached(self, slots: np.ndarray, ends: np.ndarray) -> None:
        """A forward wrote the KV of path positions [0, ends) of each slot."""
        self.path_cached[slots] = ends

    def admit(self, slots: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Which rows (``wanted`` [R] of ``slots``) get KV for this round: blocks for their
        committed tokens, K drafts and one more, while free blocks last. Rows needing no new
        block come first, then rows that hold blocks, then the rest. A wanted row that does
        not fit gives its blocks back. Returns the admitted mask [R]."""
        positions = self.num_tokens[slots] + self.max_drafts + 1
        need = np.maximum(self.blocks.blocks_needed(positions) - self.num_blocks[slots], 0)
        need = np.where(wanted, need, 0)
        order = np.lexsort((np.arange(len(slots)), self.num_blocks[slots] == 0, need > 0))
        fits = np.zeros(len(slots), dtype=bool)
        fits[order] = np.cumsum(need[order]) <= self.blocks.num_free
        admitted = wanted & fits
        self.evict(slots[wanted & ~fits])
        self.ensure_blocks(slots[admitted], positions[admitted])
        return admitted

    def apply_deltas(self, slots: np.ndarray, delta_lens: np.ndarray, flat: np.ndarray,
                     is_step_delta: np.ndarray) -> Outcomes:
        """Appends each row's new committed tokens and derives the verification outcome.

        ``is_step_delta`` marks rows whose delta is this step's sampled tokens (accepted
        drafts + bonus) rather than a resynchronisation.
        """
        starts = np.cumsum(delta_lens) - delta_lens  # [R]
        if (self.num_tokens[slots] + delta_lens > self.max_len).any():
            raise ValueError("a request outgrew the draft server's max_model_len")
        width = self.max_drafts
        col = np.arange(width)[None, :]
        head = np.where(col < delta_lens[:, None],
                        flat[np.minimum(starts[:, None] + col, max(len(flat) - 1, 0))], -2)
        proposed = self.num_drafts[slots]
        same = (head == self.drafts[slots]) & (col < proposed[:, None])
        match = np.cumprod(same, axis=1).sum(axis=1)  # leading delta tokens equal to drafts
        num_accepted = delta_lens - 1
        is_outcome = is_step_delta & (num_accepted <= proposed) & (match >= num_accepted)
        old_len = self.num_tokens[slots]
        self.path_cached[slots] = np.minimum(self.path_cached[slots], old_len + match)
        owner = np.repeat(np.arange(len(slots)), delta_lens)
        offset = np.arange(len(flat)) - starts[owner]
        self.tokens[slots[owner], old_len[owner] + offset] = flat
        self.num_tokens[slots] = old_len + delta_lens
        self.num_drafts[slots] = 0
        bonus = flat[np.maximum(starts + delta_lens - 1, 0)] if len(flat) else np.zeros_like(slots)
        return Outcomes(num_accepted, bonus.astype(np.int64), is_outcome, proposed)

    def set_drafts(self, slots: np.ndarray, drafts: np.ndarray, lens: np.ndarray,
                   source: np.ndarray) -> None:
        """Records the drafts returned for each row ([R, max_drafts], padded with -1)."""
        self.drafts[slots] = drafts
        self.num_drafts[slots] = lens
        self.draft_source[slots] = source

    def path_tokens(self, slots: np.ndarray) -> np.ndarray:
        """Rows of ``tokens + drafts`` [R, max_len + max_drafts + 1] (drafts written in place)."""
        paths = self.tokens[slots].copy()
        col = np.arange(self.max_drafts)[None, :]
        where = self.num_tokens[slots][:, None] + col
        keep = col < self.num_drafts[slots][:, None]
        rows = np.nonzero(keep)[0]
        paths[rows, where[keep]] = self.drafts[slots][keep]
        return paths

    def ensure_blocks(self, slots: np.ndarray, num_positions: np.ndarray) -> None:
        """Allocates blocks so that positions [0, num_positions) of each slot have a KV slot."""
        needed = self.blocks.blocks_needed(num_positions) - self.num_blocks[slots]
        needed = np.maximum(needed, 0)
        if needed.sum() == 0:
            return
        fresh = self.blocks.allocate(int(needed.sum()))
        owner = np.repeat(np.arange(len(slots)), needed)
        offset = segment_offsets(needed)
        self.block_tables[slots[owner], self.num_blocks[slots][owner] + offset] = fresh
        self.num_blocks[slots] += needed
