"""Geometric fan-out (Saguaro cache, Thm 12 of Kumar, Dao & May).

The number of accepted drafts k of a round with K drafts is modelled as a capped
geometric variable with per-token acceptance a:

    P(k) = (1 - a) a^k  for k < K,        P(K) = a^K.

If a cache miss at fan-out F has probability F^(-r), the budget B = sum_k F_k
that maximises the hit probability sum_k P(k) (1 - F_k^(-r)) is F_k ∝ P(k)^(1/(1+r)):

    F_k = F_0 a^(k/(1+r))                         for k < K
    F_K = F_0 a^(K/(1+r)) (1 - a)^(-1/(1+r))

with F_0 chosen so that the F_k sum to B. Integers are assigned by largest remainder.
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


def geometric_fanout_weights(acceptance: float, num_drafts: int, r: float) -> np.ndarray:
    """Real-valued F_k / F_0 from the closed form of Thm 12, shape [num_drafts + 1]."""
    a = float(np.clip(acceptance, 1e-6, 1.0 - 1e-6))
    exponent = 1.0 / (1.0 + r)
    k = np.arange(num_drafts + 1)
    weights = a ** (k * exponent)
    weights[num_drafts] *= (1.0 - a) ** (-exponent)
    return weights


def round_to_budget(weights: np.ndarray, budget: int) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``budget`` (largest remainder)."""
    if budget <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    ideal = weights / weights.sum() * budget
    counts = np.floor(ideal).astype(np.int64)
    remainder = budget - int(counts.sum())
    if remainder:
        order = np.argsort(-(ideal - counts), kind="stable")
        counts[order[:remainder]] += 1
    return counts


def geometric_fanout(budget: int, acceptance: float, num_drafts: int, r: float) -> np.ndarray:
    """Integer fan-out F_0..F_K summing to ``budget`` (Thm 12)."""
    return round_to_budget(geometric_fanout_weights(acceptance, num_drafts, r), budget)


def fanout_table(budget: int, acceptance: float, max_drafts: int, r: float) -> np.ndarray:
    """Row n (n = 0..max_drafts) is the fan-out for a round that proposed n drafts,
    padded with zeros: shape [max_drafts + 1, max_drafts + 1]."""
    table = np.zeros((max_drafts + 1, max_drafts + 1), dtype=np.int64)
    for num_drafts in range(max_drafts + 1):
        table[num_drafts, :num_drafts + 1] = geometric_fanout(budget, acceptance, num_drafts, r)
    return table
