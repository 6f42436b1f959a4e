"""Geometric fan-out (Thm 12): closed forms, sums, monotonicity, rounding; the exact
integer fan-out under a fitted miss law."""
import itertools

import numpy as np
import pytest

from tests.reference_fanout import geometric_fanout, geometric_fanout_weights, round_to_budget
from vllm_ssd.saguaro.fanout import (capped_geometric_pmf, fanout_table, power_law_miss,
                                     saguaro_fanout)


def test_pmf_is_a_distribution():
    pmf = capped_geometric_pmf(0.8, 4)
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf[4] == pytest.approx(0.8 ** 4)  # all accepted
    assert pmf[1] / pmf[0] == pytest.approx(0.8)


@pytest.mark.parametrize("a,k,r", [(0.64, 4, 1.0), (0.9, 7, 0.5), (0.3, 3, 2.0)])
def test_weights_match_closed_form(a, k, r):
    w = geometric_fanout_weights(a, k, r)
    e = 1 / (1 + r)
    assert w[:k] == pytest.approx([a ** (i * e) for i in range(k)])
    assert w[k] == pytest.approx(a ** (k * e) * (1 - a) ** (-e))
    # the closed form is F_k proportional to P(k)^(1/(1+r))
    ratio = w / capped_geometric_pmf(a, k) ** e
    assert ratio == pytest.approx(np.full(k + 1, ratio[0]))


@pytest.mark.parametrize("budget", [1, 5, 20, 24, 64])
def test_integers_sum_to_budget(budget):
    fanout = geometric_fanout(budget, 0.7, 5, 1.0)
    assert fanout.sum() == budget and (fanout >= 0).all()


def test_monotone_before_the_last_position():
    fanout = geometric_fanout(40, 0.6, 6, 1.0)
    assert (np.diff(fanout[:-1]) <= 0).all()


def test_worked_example():
    # K=4, B=20, a=0.64, r=1: real F = 20 / 3.635 * [1, .8, .64, .512, .683]
    #   = [5.50, 4.40, 3.52, 2.82, 3.76] -> largest remainder [5, 4, 4, 3, 4]
    # (a third-party note quotes [6, 5, 4, 3, 2], which drops the F_K term)
    assert geometric_fanout(20, 0.64, 4, 1.0).tolist() == [5, 4, 4, 3, 4]


def test_low_acceptance_puts_the_budget_at_k0():
    fanout = geometric_fanout(10, 0.001, 4, 1.0)
    assert fanout[0] >= 9


def test_high_acceptance_puts_the_budget_at_k_max():
    fanout = geometric_fanout(10, 0.99, 4, 1.0)
    assert fanout.argmax() == 4


def test_round_to_budget_largest_remainder():
    assert round_to_budget(np.array([1.0, 1.0, 1.0]), 4).tolist() == [2, 1, 1]
    assert round_to_budget(np.array([0.0, 3.0]), 5).tolist() == [0, 5]
    assert round_to_budget(np.array([1.0]), 0).tolist() == [0]


def test_table_rows_cover_fewer_drafts():
    table = fanout_table(8, 0.8, 4, 1.0, c=0.4)
    for n in range(5):
        assert table[n, :n + 1].sum() == 8 and table[n, n + 1:].sum() == 0


def hit_probability(pmf, miss, fanout):
    return float((pmf * (1.0 - miss[fanout])).sum())


@pytest.mark.parametrize("a,r,c", [(0.92, 0.1, 0.15), (0.7, 0.6, 0.4), (0.5, 1.0, 1.0),
                                   (0.95, 2.0, 0.9)])
@pytest.mark.parametrize("budget", [1, 2, 3, 5, 7])
def test_saguaro_fanout_is_the_integer_optimum(a, r, c, budget):
    pmf, miss = capped_geometric_pmf(a, 4), power_law_miss(budget, r, c)
    fanout = saguaro_fanout(budget, pmf, miss)
    best = max(hit_probability(pmf, miss, np.array(f))
               for f in itertools.product(range(budget + 1), repeat=5) if sum(f) <= budget)
    assert fanout.sum() <= budget and (fanout >= 0).all()
    assert hit_probability(pmf, miss, fanout) == pytest.approx(best)
    geometric = geometric_fanout(budget, a, 4, r)
    assert hit_probability(pmf, miss, fanout) >= hit_probability(pmf, miss, geometric) - 1e-12


def test_a_good_first_guess_covers_every_outcome_before_widening_one():
    # the draft's top guess hits 85% of the time whatever F: one branch per k first
    pmf, miss = capped_geometric_pmf(0.92, 4), power_law_miss(8, 0.1, 0.15)
    assert saguaro_fanout(5, pmf, miss).tolist() == [1, 1, 1, 1, 1]
    assert geometric_fanout(5, 0.92, 4, 0.1).tolist() == [1, 1, 0, 0, 3]  # k = 2, 3 never hit


def test_power_law_miss_curve():
    miss = power_law_miss(4, 1.0, 0.5)
    assert miss.tolist() == pytest.approx([1.0, 0.5, 0.25, 0.5 / 3, 0.125])
    assert power_law_miss(2, 0.1, 3.0).tolist() == [1.0, 1.0, 1.0]  # capped at a certain miss


def test_table_with_a_law_uses_the_integer_optimum():
    table = fanout_table(5, 0.92, 4, 0.1, c=0.15)
    assert table[4].tolist() == [1, 1, 1, 1, 1]
    assert table[0].tolist() == [5, 0, 0, 0, 0]
