"""Ragged-batch offsets and the draft KV cache's size: the full need, and the budget."""
import numpy as np

from vllm_ssd.server.factory import row_positions
from vllm_ssd.server.kv.budget import (GIB, MIN_BLOCKS, default_budget_bytes, needed_blocks,
                                       size_kv_cache)
from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.segments import segment_offsets


def test_segment_offsets():
    assert segment_offsets(np.array([2, 3])).tolist() == [0, 1, 0, 1, 2]
    assert segment_offsets(np.array([0, 1, 0, 2])).tolist() == [0, 0, 1]
    assert segment_offsets(np.array([], dtype=np.int64)).tolist() == []


def test_the_kv_cache_holds_every_row_and_a_full_fan_out_of_branches():
    k, block_size, budget, seqs = 4, 16, 8, 3
    max_len = row_positions(100, k)
    blocks = needed_blocks(seqs, max_len, k, block_size, budget)
    manager = BlockManager(blocks, block_size, reserved=1)
    per_row = -(-(max_len + k + 1) // block_size)
    rows = manager.allocate(seqs * per_row).reshape(seqs, per_row)  # every row at its longest
    parents = np.repeat(rows, budget, axis=0)  # [seqs * budget, per_row]
    # every branch forks inside a block and writes K tokens across the next boundary
    fork_lens = np.full(seqs * budget, (per_row - 2) * block_size + block_size - 2)
    tables, cow_src, _ = manager.fork(parents, fork_lens, k)  # raises OutOfBlocks if short
    assert (tables[:, -2:] != parents[:, -2:]).all() and len(cow_src) == seqs * budget


def test_a_budget_caps_the_cache_and_never_exceeds_the_need():
    needed, per_block = 10_000, 1 << 20  # blocks, bytes per block
    default = (3 * GIB, "rule")
    sizing = size_kv_cache(needed, per_block, 16, None, None, default)
    assert sizing.num_blocks == 3 * 1024 and sizing.source == "rule"
    assert sizing.budget_bytes <= 3 * GIB and sizing.needed_bytes == needed * per_block
    assert size_kv_cache(needed, per_block, 16, 0.5, None, default).num_blocks == 512
    assert size_kv_cache(needed, per_block, 16, 100.0, None, default).num_blocks == needed
    assert size_kv_cache(needed, per_block, 16, 0.5, 800, default).num_blocks == 51
    assert size_kv_cache(needed, per_block, 16, 1e-9, None, default).num_blocks == MIN_BLOCKS
    assert "0.50 GiB (kv_cache_gb" in size_kv_cache(needed, per_block, 16, 0.5, None,
                                                    default).describe(16)


def test_the_default_budget_is_a_share_of_free_memory():
    # CPU: a quarter of what is free once the target's KV space is taken, at most 2 GiB
    assert default_budget_bytes("cpu", 10 * GIB, 2 * GIB)[0] == 2 * GIB
    assert default_budget_bytes("cpu", 6 * GIB, 2 * GIB)[0] == 1 * GIB
    assert default_budget_bytes("cpu", 1 * GIB, 2 * GIB)[0] == 0
    assert default_budget_bytes("cuda", 60 * GIB, 0)[0] == 6 * GIB


def test_a_build_fans_out_only_as_far_as_free_blocks_reach():
    from vllm_ssd.server.kv.budget import fit_fanout

    fanout = np.array([[4, 2, 1], [4, 2, 1]])
    assert fit_fanout(fanout, 20) is fanout
    fitted = fit_fanout(fanout, 7)
    assert fitted.sum() <= 7 and (fitted <= fanout).all() and fitted[:, 0].tolist() == [2, 2]
    assert fit_fanout(fanout, 0).sum() == 0
