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


def test_a_rejection_at_the_first_draft_keeps_the_kv_of_the_committed_tokens_only():
    table = table_with_drafts([20, 21, 22], path_cached=8)  # glue wrote 5..7: drafts 20-22
    apply(table, [99])  # k = 0: the bonus token replaces draft 20
    assert table.path_cached[0] == 5 and table.first_uncached(np.array([0]))[0] == 5
    assert table.uncached_tokens(np.array([0]))[0] == 1


def test_full_acceptance_keeps_the_kv_written_and_the_next_pass_starts_at_the_bonus():
    table = table_with_drafts([20, 21, 22], path_cached=8)
    apply(table, [20, 21, 22, 55])
    assert table.path_cached[0] == 8  # 20, 21, 22's KV stays valid; 55 has none yet
    assert table.first_uncached(np.array([0]))[0] == 8


def test_a_fully_cached_row_still_runs_its_last_committed_token():
    table = table_with_drafts([], path_cached=5)
    table.mark_cached(np.array([0]), np.array([5]))
    assert table.first_uncached(np.array([0]))[0] == 4  # its logits give the first draft


def test_a_preempted_row_rebuilds_its_kv_from_the_start():
    table = table_with_drafts([20], path_cached=6)
    table.evict(np.array([0]))
    assert table.first_uncached(np.array([0]))[0] == 0
    assert table.uncached_tokens(np.array([0]))[0] == 5


def test_path_tokens_place_drafts_after_the_committed_tokens():
    table = table_with_drafts([20, 21], path_cached=5)
    assert table.path_tokens(np.array([0]))[0, :8].tolist() == [10, 11, 12, 13, 14, 20, 21, 0]


def table_of(num_blocks: int, lengths: list[int]) -> RequestTable:
    """Rows 0.. with ``lengths`` committed tokens, 4-token blocks, K = 3 (block 0 reserved)."""
    table = RequestTable(max_slots=4, max_len=64, max_drafts=3,
                         blocks=BlockManager(num_blocks, 4, reserved=1))
    slots = np.arange(len(lengths))
    table.activate(slots, np.zeros(len(lengths), dtype=np.float32))
    table.apply_deltas(slots, np.array(lengths), np.arange(sum(lengths), dtype=np.int32),
                       np.zeros(len(lengths), dtype=bool))
    return table


def test_rows_are_admitted_while_blocks_last_and_the_rest_wait():
    table = table_of(num_blocks=1 + 7, lengths=[9, 9, 9])  # each needs ceil(13 / 4) = 4
    slots = np.arange(3)
    admitted = table.admit(slots, np.array([True, True, True]))
    assert admitted.tolist() == [True, False, False]
    assert table.num_blocks.tolist()[:3] == [4, 0, 0] and table.blocks.num_free == 3
    table.path_cached[0] = 9
    table.release(np.array([0]))  # row 0 finishes: the next waiting row gets its blocks
    assert table.admit(slots[1:], np.array([True, True])).tolist() == [True, False]
    assert table.path_cached[1] == 0  # KV to be built from the committed tokens


def test_holders_keep_their_blocks_before_newcomers_and_a_row_that_grew_out_gives_back():
    table = table_of(num_blocks=1 + 9, lengths=[9, 9])
    slots = np.arange(2)
    assert table.admit(slots, np.array([True, True])).tolist() == [True, True]  # 8 blocks
    table.path_cached[:2] = 9
    for row, grown in ((0, 4), (1, 4)):  # both cross into a fifth block
        table.apply_deltas(np.array([row]), np.array([grown]), np.arange(grown, dtype=np.int32),
                           np.array([False]))
    admitted = table.admit(slots, np.array([True, True]))  # one free block: row 0 takes it
    assert admitted.tolist() == [True, False]
    assert table.num_blocks[1] == 0 and table.path_cached[1] == 0 and table.active[1]
    assert table.blocks.num_free == 4
    unwanted = table.admit(slots, np.array([True, False]))  # a row without drafts keeps all
    assert unwanted.tolist() == [True, False] and table.num_blocks[0] == 5
