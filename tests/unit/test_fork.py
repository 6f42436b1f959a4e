"""Fork: candidate t* per position, excluding the drafted token before the last position."""
import numpy as np
import torch

from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.speculation.builder import CacheBuilder
from vllm_ssd.server.speculation.spec_cache import SpeculationCache
from vllm_ssd.server.state import RequestTable


def make_builder():
    table = RequestTable(max_slots=2, max_len=32, max_drafts=2, blocks=BlockManager(32, 4))
    table.activate(np.array([0]), np.zeros(1, dtype=np.float32))
    table.set_drafts(np.array([0]), np.array([[3, 5]]), np.array([2]), np.array([1]))
    return CacheBuilder(None, table, SpeculationCache(2, 2, 4), table.blocks)


def logits_ranking(*rankings, vocab=8):
    """One logits row per ranking: earlier tokens get higher logits."""
    rows = torch.full((len(rankings), vocab), -100.0)
    for r, ranking in enumerate(rankings):
        for place, token in enumerate(ranking):
            rows[r, token] = 10.0 - place
    return rows


def test_drafted_token_is_excluded_except_at_the_last_position():
    builder = make_builder()
    # glue rows j = 0, 1, 2; drafts s1 = 3, s2 = 5
    logits = logits_ranking([3, 1, 2], [5, 3, 7], [4, 6, 1])
    fanout = np.array([[2, 1, 2]])
    branches = builder.fork(np.array([0]), logits, np.array([2]), fanout)
    got = sorted(zip(branches.k.tolist(), branches.rank.tolist(), branches.tokens.tolist()))
    # j=0 excludes 3 -> 1, 2; j=1 excludes 5 -> 3; j=2 excludes nothing -> 4, 6
    assert got == [(0, 0, 1), (0, 1, 2), (1, 0, 3), (2, 0, 4), (2, 1, 6)]


def test_zero_fanout_positions_get_no_branch():
    builder = make_builder()
    logits = logits_ranking([3, 1, 2], [5, 3, 7], [4, 6, 1])
    branches = builder.fork(np.array([0]), logits, np.array([2]), np.array([[0, 0, 3]]))
    assert branches.k.tolist() == [2, 2, 2] and branches.tokens.tolist() == [4, 6, 1]


def test_excluded_token_in_the_middle_of_the_top_is_skipped():
    builder = make_builder()
    # j=0 ranks 1, 3(drafted s1), 2 -> 1, 2; j=1 ranks 7, 2, 5(drafted s2) -> 7, 2
    logits = logits_ranking([1, 3, 2, 4], [7, 2, 5, 1], [0, 1, 2, 3])
    branches = builder.fork(np.array([0]), logits, np.array([2]), np.array([[2, 2, 0]]))
    got = list(zip(branches.k.tolist(), branches.rank.tolist(), branches.tokens.tolist()))
    assert got == [(0, 0, 1), (0, 1, 2), (1, 0, 7), (1, 1, 2)]
