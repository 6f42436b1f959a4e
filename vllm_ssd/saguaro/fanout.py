"""Geometric fan-out (Saguaro cache, Thm 12 of Kumar, Dao & May).

The number of accepted drafts k of a round with K drafts is modelled as a capped
geometric variable with per-token acceptance a:

    P(k) = (1 - a) a^k  for k < K,        P(K) = a^K.

If a cache miss at fan-out F has probability F^(-r), the budget B = sum_k F_k
that maximises the hit probability sum_k P(k) (1 - F_k^(-r)) is F_k ∝ P(k)^(1/(1+r)):

    F_k = F_0 a^(k/(1+r))                         for k < K
    F_K = F_0 a^(K/(1+r)) (1 - a)^(-1/(1+r))

with F_0 chosen so that the F_k sum to B (``tests/reference_fanout.py`` keeps this closed
form, with integers by largest remainder, as the reference for the tests).

The server fits the miss law as c F^(-r) (c < 1: one branch, the draft's top
guess, already hits often), for which the closed form misplaces small budgets:
it can leave an outcome with F_k = 0, a certain miss, to give F_K one more branch.
``saguaro_fanout`` maximises the same objective sum_k P(k) (1 - miss(F_k)) exactly
over integers (a knapsack over k); for large budgets its F_k follow P(k)^(1/(1+r)).
"""
from __future__ import annotations

import numpy as np


def capped_geometric_pmf(acceptance: float, num_drafts: int) -> np.ndarray:
    """P(k) for k = 0..num_drafts, shape [num_drafts + 1]."""
    a = float(np.clip(acceptance, 0.0, 1.0))
    k = np.arange(num_drafts + 1)
    pmf = (1.0 - a) * a ** k
    pmf[num_drafts] = a ** num_drafts
    return pmf


def power_law_miss(max_fanout: int, r: float, c: float = 1.0) -> np.ndarray:
    """miss(F) = min(1, c F^(-r)) for F = 0..max_fanout (F = 0: a certain miss)."""
    fanout = np.maximum(np.arange(max_fanout + 1, dtype=np.float64), 1.0)
    miss = np.minimum(c * fanout ** (-r), 1.0)
    miss[0] = 1.0
    return miss


def saguaro_fanout(budget: int, pmf: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """Integer F_0..F_K with sum <= budget maximising sum_k pmf[k] (1 - miss[F_k]).

    pmf [K + 1]: P(k); miss [>= budget + 1]: miss probability at fan-out F, non-increasing.
    Dynamic programme over k: best[b] is the best hit probability of the outcomes so far
    with b branches; exact for any miss curve."""
    num_outcomes = len(pmf)
    spend = np.arange(budget + 1)
    used = spend[:, None] - spend[None, :]  # [b, f]: branches left for earlier outcomes
    best = np.zeros(budget + 1)
    choice = np.zeros((num_outcomes, budget + 1), dtype=np.int64)
    for k in range(num_outcomes):
        gain = pmf[k] * (1.0 - miss[:budget + 1])  # [f]
        total = np.where(used >= 0, best[np.maximum(used, 0)] + gain[None, :], -np.inf)
        choice[k] = total.argmax(axis=1)  # fewest branches among equal totals
        best = total.max(axis=1)
    fanout = np.zeros(num_outcomes, dtype=np.int64)
    left = budget
    for k in range(num_outcomes - 1, -1, -1):
        fanout[k] = choice[k, left]
        left -= fanout[k]
    return fanout


def fanout_table(budget: int, acceptance: float, max_drafts: int, r: float,
                 c: float) -> np.ndarray:
    """Row n (n = 0..max_drafts) is ``saguaro_fanout`` under the law miss(F) = c F^(-r) for
    a round that proposed n drafts, padded with zeros: shape [max_drafts + 1, max_drafts + 1]."""
    table = np.zeros((max_drafts + 1, max_drafts + 1), dtype=np.int64)
    miss = power_law_miss(budget, r, c)
    for n in range(max_drafts + 1):
        table[n, :n + 1] = saguaro_fanout(budget, capped_geometric_pmf(acceptance, n), miss)
    return table
