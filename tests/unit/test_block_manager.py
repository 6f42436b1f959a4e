"""Reference-counted KV blocks: allocate, share, free, copy-on-write forks, no leaks."""
import numpy as np
import pytest

from vllm_ssd.server.kv.block_manager import BlockManager, OutOfBlocks
from vllm_ssd.server.state import RequestTable


def test_allocate_and_free_return_blocks():
    bm = BlockManager(8, 4)
    a = bm.allocate(3)
    assert len(set(a.tolist())) == 3 and bm.num_free == 5
    assert (bm.ref_counts[a] == 1).all()
    bm.free(a)
    assert bm.num_free == 8 and (bm.ref_counts == 0).all()


def test_shared_blocks_survive_one_free():
    bm = BlockManager(4, 4)
    a = bm.allocate(2)
    bm.share(a)
    bm.free(a)
    assert bm.num_free == 2 and (bm.ref_counts[a] == 1).all()
    bm.free(a)
    assert bm.num_free == 4


def test_out_of_blocks_and_double_free():
    bm = BlockManager(2, 4)
    with pytest.raises(OutOfBlocks):
        bm.allocate(3)
    a = bm.allocate(1)
    bm.free(a)
    with pytest.raises(RuntimeError):
        bm.free(a)


def test_fork_shares_full_blocks_and_copies_the_partial_one():
    bm = BlockManager(16, 4)
    parent = bm.allocate(3)  # positions 0..11
    tables = np.full((2, 6), -1, dtype=np.int32)
    tables[:, :3] = parent
    # branch 0 forks at 8 (block boundary): shares 2 blocks, no copy
    # branch 1 forks at 6 (inside block 1): shares 1 block, copies block 1
    branch, src, dst = bm.fork(tables, np.array([8, 6]), new_tokens=4)
    assert branch[0, :2].tolist() == parent[:2].tolist() and branch[0, 2] not in parent
    assert branch[1, 0] == parent[0] and branch[1, 1] not in parent
    assert src.tolist() == [parent[1]] and dst.tolist() == [branch[1, 1]]
    assert bm.ref_counts[parent[0]] == 3 and bm.ref_counts[parent[1]] == 2
    # branch 1 writes positions 6..9: blocks 1 and 2 are its own
    assert branch[1, 2] >= 0 and branch[1, 3] == -1
    bm.free(branch.ravel())
    assert (bm.ref_counts[parent] == 1).all()
    bm.free(parent)
    assert bm.num_free == 16


def test_no_leak_after_1000_rounds_of_branching():
    rng = np.random.default_rng(0)
    bm = BlockManager(4096, 4)
    table = RequestTable(max_slots=4, max_len=4000, max_drafts=4, blocks=bm)
    slots = np.arange(4)
    table.activate(slots, np.zeros(4, dtype=np.float32))
    for _ in range(1000):
        grow = rng.integers(1, 5, size=4)
        table.num_tokens[slots] = np.minimum(table.num_tokens[slots] + grow, 3900)
        table.ensure_blocks(slots, table.num_tokens[slots] + 5)
        parents = np.repeat(slots, 3)
        fork_lens = table.num_tokens[parents] + rng.integers(0, 5, size=parents.size)
        branch, _, _ = bm.fork(table.block_tables[parents], fork_lens, new_tokens=4)
        bm.free(branch.ravel())
        if rng.random() < 0.05:  # a request finishes and its slot is reused
            victim = slots[rng.integers(0, 4):][:1]
            table.release(victim)
            table.activate(victim, np.zeros(1, dtype=np.float32))
    owned = table.num_blocks[slots].sum()
    assert bm.num_free == 4096 - owned
    assert (bm.ref_counts[table.block_tables[table.block_tables >= 0]] == 1).all()
    table.release(slots)
    assert bm.num_free == 4096 and (bm.ref_counts == 0).all()
