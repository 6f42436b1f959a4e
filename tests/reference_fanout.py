"""The closed-form geometric fan-out of Thm 12 (Kumar, Dao & May), the reference that the
exact integer fan-out of ``vllm_ssd.saguaro.fanout`` is checked against."""
from __future__ import annotations

import numpy as np


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

