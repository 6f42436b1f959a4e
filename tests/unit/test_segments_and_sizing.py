"""Ragged-batch offsets and the draft KV cache's size."""
import numpy as np

from vllm_ssd.server.factory import draft_kv_blocks, row_positions
from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.segments import segment_offsets


def test_segment_offsets():
    assert segment_offsets(np.array([2, 3])).tolist() == [0, 1, 0, 1, 2]
    assert segment_offsets(np.array([0, 1, 0, 2])).tolist() == [0, 0, 1]
    assert segment_offsets(np.array([], dtype=np.int64)).tolist() == []


def test_the_kv_cache_holds_every_row_and_a_full_fan_out_of_branches():
    k, block_size, budget, seqs = 4, 16, 8, 3
    max_len = row_positions(100, k)
    blocks = draft_kv_blocks(seqs, max_len, k, block_size, budget, None)
    manager = BlockManager(blocks, block_size, reserved=1)
    per_row = -(-(max_len + k + 1) // block_size)
    rows = manager.allocate(seqs * per_row).reshape(seqs, per_row)  # every row at its longest
    parents = np.repeat(rows, budget, axis=0)  # [seqs * budget, per_row]
    # every branch forks inside a block and writes K tokens across the next boundary
    fork_lens = np.full(seqs * budget, (per_row - 2) * block_size + block_size - 2)
    tables, cow_src, _ = manager.fork(parents, fork_lens, k)  # raises OutOfBlocks if short
    assert (tables[:, -2:] != parents[:, -2:]).all() and len(cow_src) == seqs * budget
    assert draft_kv_blocks(seqs, max_len, k, block_size, budget, 64) == \
        64 // block_size + seqs * budget * 2 + 1
