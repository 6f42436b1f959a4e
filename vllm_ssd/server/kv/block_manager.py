"""Reference-counted KV block allocator with vectorised allocate / free / fork.

Block tables are int32 rows padded with -1. A request's main context owns its
blocks; a speculation branch *forks* its parent: it shares the parent's full
blocks below the fork point (reference count + 1) and gets fresh blocks from the
fork point on, the first of which is a copy of the parent's partially filled
block (copy-on-write). Freeing decrements counts; blocks reaching zero return
to the free stack.
"""
from __future__ import annotations

import numpy as np
from vllm_ssd.server.segments import segment_offsets


class OutOfBlocks(RuntimeError):
    pass


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, reserved: int = 0):
        """Blocks [0, reserved) are never handed out (block 0 absorbs padding writes)."""
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = np.zeros(num_blocks, dtype=np.int32)
        self.free_stack = np.zeros(num_blocks, dtype=np.int32)
        self.free_stack[:num_blocks - reserved] = np.arange(num_blocks - 1, reserved - 1, -1)
        self.num_free = num_blocks - reserved

    def allocate(self, num: int) -> np.ndarray:
        """Returns ``num`` fresh block ids, each with reference count 1."""
        if num > self.num_free:
            raise OutOfBlocks(f"need {num} KV blocks, {self.num_free} free")
        self.num_free -= num
        blocks = self.free_stack[self.num_free:self.num_free + num][::-1].copy()
        self.ref_counts[blocks] = 1
        return blocks

    def share(self, blocks: np.ndarray) -> None:
        """One more owner for each listed block (duplicates count twice)."""
        ids, counts = np.unique(blocks[blocks >= 0], return_counts=True)
        self.ref_counts[ids] += counts.astype(np.int32)

    def free(self, blocks: np.ndarray) -> None:
        """Drops one reference per listed block (-1 entries are ignored). Counted with
        np.unique: np.subtract.at took ~1 ms per step for a batch of 64 with 8 branches."""
        ids, counts = np.unique(blocks[blocks >= 0], return_counts=True)
        if ids.size == 0:
            return
        remaining = self.ref_counts[ids] - counts.astype(np.int32)
        if (remaining < 0).any():
            raise RuntimeError("KV block freed more often than it was owned")
        self.ref_counts[ids] = remaining
        released = ids[remaining == 0]
        self.free_stack[self.num_free:self.num_free + released.size] = released
        self.num_free += released.size

    def blocks_needed(self, num_tokens: np.ndarray) -> np.ndarray:
        return (num_tokens + self.block_size - 1) // self.block_size

    def fork(self, parent_tables: np.ndarray, fork_lens: np.ndarray,
             new_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forks one branch per row of ``parent_tables`` [N, max_blocks].

        Branch i shares positions [0, fork_lens[i]) with its parent and will write
        ``new_tokens`` positions from fork_lens[i] on. Returns the branch tables
        [N, max_blocks] and the (src, dst) block pairs to copy for copy-on-write.
        """
        bs = self.block_size
        first_new = fork_lens // bs  # index of the first block the branch writes
        last_new = (fork_lens + new_tokens - 1) // bs
        num_new = last_new - first_new + 1  # [N]
        fresh = self.allocate(int(num_new.sum()))
        col = np.arange(parent_tables.shape[1])[None, :]
        is_shared = col < first_new[:, None]  # [N, max_blocks]
        self.share(parent_tables[is_shared])
        tables = np.where(is_shared, parent_tables, -1).astype(np.int32)
        owner = np.repeat(np.arange(len(fork_lens)), num_new)
        offset = segment_offsets(num_new)
        tables[owner, first_new[owner] + offset] = fresh
        needs_copy = fork_lens % bs != 0
        rows = np.nonzero(needs_copy)[0]
        cow_src = parent_tables[rows, first_new[rows]]
        cow_dst = tables[rows, first_new[rows]]
        return tables, cow_src, cow_dst
