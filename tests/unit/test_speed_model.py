"""Speed model (Thm 7, Cor 16) and the backup / depth decisions built on it."""
import pytest

from vllm_ssd.saguaro.speed_model import (BackupOption, batch_throughput, choose_backup,
                                          critical_batch_size, expected_tokens, plan_depth,
                                          sd_speedup, server_round_throughput, ssd_speedup)


def test_expected_tokens():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_ssd_never_slower_than_sd_with_the_same_backup():
    e, t_p = expected_tokens(0.8, 4), 0.4
    sd = sd_speedup(e, t_p)
    for p_hit in (0.0, 0.3, 0.9, 1.0):
        assert ssd_speedup(p_hit, e, e, t_p, t_b=t_p) >= sd - 1e-12
    assert ssd_speedup(0.9, e, e, t_p, t_p) > sd


def test_all_hits_hide_drafting_completely():
    assert ssd_speedup(1.0, 3.0, 1.0, 0.7, 0.7) == pytest.approx(3.0)
    # a cache build slower than the target step caps the gain
    assert ssd_speedup(1.0, 3.0, 1.0, 2.0, 0.7) == pytest.approx(1.5)


def test_batch_makes_misses_dominate():
    one = batch_throughput(1, 0.9, 3.0, 3.0, 0.5, 0.5)
    many = batch_throughput(32, 0.9, 3.0, 3.0, 0.5, 0.5)
    assert many < one
    assert batch_throughput(1, 0.9, 3.0, 3.0, 0.5, 0.5) == ssd_speedup(0.9, 3.0, 3.0, 0.5, 0.5)


def test_fast_backup_wins_at_large_batch_only():
    slow = BackupOption("neural", tokens_after_miss=3.0, latency=0.6)
    fast = BackupOption("ngram", tokens_after_miss=1.2, latency=0.0)
    assert choose_backup(1, 0.9, 3.0, 0.5, [slow, fast]) == "neural"
    assert choose_backup(64, 0.9, 3.0, 0.5, [slow, fast]) == "ngram"
    b_star = critical_batch_size(0.9, 3.0, 0.5, slow, fast)
    assert b_star is not None and 1 < b_star < 64
    assert choose_backup(b_star - 1, 0.9, 3.0, 0.5, [slow, fast]) == "neural"


def test_plan_depth_prefers_what_fits_in_a_target_step():
    # each draft step costs 0.4 target steps: depth 2 fits (0.4 glue + 0.8), depth 4 does not
    depth, t_p = plan_depth(4, 0.9, 1.0, 1.0, 1.0, 1, lambda d: 0.4 + 0.4 * d)
    assert depth in (2, 3) and t_p == pytest.approx(0.4 + 0.4 * depth)
    # free drafting: the deepest tree wins
    assert plan_depth(4, 0.9, 1.0, 1.0, 1.0, 1, lambda d: 0.1)[0] == 4


def test_server_round_pays_for_a_slow_build_only_up_to_the_deadline():
    # a build of 4 target steps is cut at 1.5: the round costs 1.5, plus T_b on a miss
    assert server_round_throughput(1, 1.0, 3.0, 1.0, 4.0, 0.5, 1.5) == pytest.approx(2.0)
    assert server_round_throughput(2, 0.5, 3.0, 1.0, 0.5, 1.0, 1.5) == pytest.approx(2.0 / 1.75)
