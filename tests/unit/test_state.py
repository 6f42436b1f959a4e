"""Outcomes derived from committed-token deltas, and draft-KV validity along the path."""
import numpy as np

from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.state import RequestTable


def table_with_drafts(drafts, path_cached):
    table = RequestTable(max_slots=2, max_len=64, max_drafts=4, blocks=BlockManager(64, 4))
    table.activate(np.array([0]), np.zeros(1, dtype=np.float32))
    table.apply_deltas(np.array([0]), np.array([5]), np.arange(10, 15, dtype=np.int32),
                       np.array([False]))
    table.set_drafts(np.array([0]), np.array([drafts + [-1] * (4 - len(drafts))]),
                     np.array([len(drafts)]), np.array([1]))
    table.path_cached[0] = path_cached
    return table


def apply(table, delta, is_step=True):
    return table.apply_deltas(np.array([0]), np.array([len(delta)]),
                              np.array(delta, dtype=np.int32), np.array([is_step]))


def test_two_accepted_then_a_recovery_token():
    table = table_with_drafts([20, 21, 22, 23], path_cached=9)  # glue wrote 4..8
    out = apply(table, [20, 21, 99])
    assert out.is_outcome[0] and out.num_accepted[0] == 2 and out.bonus_token[0] == 99
    assert table.num_tokens[0] == 8 and table.path_cached[0] == 7  # KV valid through 21
    assert table.tokens[0, :8].tolist() == [10, 11, 12, 13, 14, 20, 21, 99]


def test_all_accepted_plus_bonus():
    table = table_with_drafts([20, 21], path_cached=7)
    out = apply(table, [20, 21, 55])
    assert out.is_outcome[0] and out.num_accepted[0] == 2 and out.bonus_token[0] == 55


def test_a_resync_is_not_an_outcome():
    table = table_with_drafts([20, 21], path_cached=7)
    out = apply(table, [20, 21, 55, 56], is_step=False)
    assert not out.is_outcome[0]
    out = apply(table, [1, 2], is_step=True)  # more tokens than drafts+1 never happens in a step
    assert not out.is_outcome[0]


def test_kv_validity_is_capped_by_what_was_computed():
    table = table_with_drafts([20, 21, 22], path_cached=5)  # nothing past the prompt
    apply(table, [20, 21, 22, 77])
    assert table.path_cached[0] == 5


def test_path_tokens_place_drafts_after_the_committed_tokens():
    table = table_with_drafts([20, 21], path_cached=5)
    assert table.path_tokens(np.array([0]))[0, :8].tolist() == [10, 11, 12, 13, 14, 20, 21, 0]
