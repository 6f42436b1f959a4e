"""Speculation cache keyed by (slot, k, t*)."""
import numpy as np

from vllm_ssd.server.speculation.spec_cache import SpeculationCache


def make_cache():
    cache = SpeculationCache(max_slots=4, max_drafts=3, max_fanout=2)
    # slot 1: outcome k=0 with t*=7 or 9; k=3 with t*=5
    cache.insert_keys(np.array([1, 1, 1]), np.array([0, 0, 3]), np.array([0, 1, 0]),
                      np.array([7, 9, 5]))
    cache.record_drafts(np.array([1, 1, 1]), np.array([0, 0, 3]), np.array([0, 1, 0]),
                        np.array([[70, 71, 72], [90, 91, 92], [50, 51, 52]]), depth=3)
    return cache


def test_lookup_hits_the_right_branch():
    cache = make_cache()
    result = cache.lookup(np.array([1, 1, 1, 2]), np.array([0, 3, 0, 0]),
                          np.array([9, 5, 8, 7]), np.array([True, True, True, True]))
    assert result.is_hit.tolist() == [True, True, False, False]
    assert result.drafts[0].tolist() == [90, 91, 92] and result.drafts[1].tolist() == [50, 51, 52]
    assert result.num_drafts.tolist() == [3, 3, 0, 0]


def test_invalid_outcomes_never_hit():
    cache = make_cache()
    result = cache.lookup(np.array([1]), np.array([0]), np.array([7]), np.array([False]))
    assert not result.is_hit[0]


def test_partial_builds_return_shorter_drafts():
    cache = make_cache()
    cache.record_drafts(np.array([1]), np.array([0]), np.array([0]), np.array([[80]]), depth=1)
    result = cache.lookup(np.array([1]), np.array([0]), np.array([7]), np.array([True]))
    assert result.num_drafts.tolist() == [1] and result.drafts[0, 0] == 80


def test_a_key_without_drafts_is_a_miss_and_clear_empties_a_slot():
    cache = make_cache()
    cache.insert_keys(np.array([2]), np.array([1]), np.array([0]), np.array([4]))
    assert not cache.lookup(np.array([2]), np.array([1]), np.array([4]), np.array([True])).is_hit[0]
    cache.clear(np.array([1]))
    assert not cache.lookup(np.array([1]), np.array([0]), np.array([7]), np.array([True])).is_hit[0]
