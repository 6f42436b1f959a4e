"""Online estimates feeding the fan-out and the fallback policy.

All estimates are exponentially weighted, so they follow a drifting workload,
and start from explicit priors so the first rounds behave sensibly.
"""
from __future__ import annotations

import math

import numpy as np


class Ewma:
    """Exponentially weighted mean. Without a prior (None) it starts at its first sample
    (value 0.0 until then) instead of being pulled towards zero by its first samples."""

    def __init__(self, prior: float | None, weight: float = 0.05):
        self.value = 0.0 if prior is None else prior
        self.weight = weight
        self.start_at_first = prior is None
        self.samples = 0

    def update(self, sample: float, count: float = 1.0) -> float:
        keep = 0.0 if self.start_at_first and self.samples == 0 else (1.0 - self.weight) ** count
        self.value = keep * self.value + (1.0 - keep) * sample
        self.samples += 1
        return self.value


class MeasuredRate:
    """An exponentially weighted mean with start-up bias correction; ``value`` is None
    until ``min_samples`` samples were seen."""

    def __init__(self, weight: float = 0.2, min_samples: int = 3):
        self.weight = weight
        self.min_samples = min_samples
        self.mean = 0.0
        self.samples = 0

    def update(self, sample: float) -> None:
        self.mean = (1.0 - self.weight) * self.mean + self.weight * sample
        self.samples += 1

    @property
    def value(self) -> float | None:
        if self.samples < self.min_samples:
            return None
        return self.mean / (1.0 - (1.0 - self.weight) ** self.samples)


class AcceptanceEstimate:
    """Per-token acceptance a of a capped geometric model, by maximum likelihood:
    a = accepted drafts / (accepted drafts + rejections), exponentially weighted."""

    def __init__(self, prior: float, prior_weight: float = 8.0, decay: float = 0.98):
        self.accepted = prior * prior_weight
        self.trials = prior_weight
        self.decay = decay

    def observe(self, num_accepted: np.ndarray, num_proposed: np.ndarray) -> None:
        has_drafts = num_proposed > 0
        if not has_drafts.any():
            return
        accepted = float(num_accepted[has_drafts].sum())
        rejected = float((num_accepted[has_drafts] < num_proposed[has_drafts]).sum())
        keep = self.decay ** int(has_drafts.sum())
        self.accepted = keep * self.accepted + accepted
        self.trials = keep * self.trials + accepted + rejected

    @property
    def value(self) -> float:
        return self.accepted / self.trials if self.trials > 0 else 0.0


class PowerLawMissEstimate:
    """Fits 1 - p_hit(F) = c F^(-r) by least squares on log miss rate vs log F,
    from hit counts per fan-out F; returns the prior r until two F values are seen."""

    def __init__(self, prior_r: float, max_fanout: int, decay: float = 0.995,
                 prior_c: float = 0.4):
        self.prior_r = prior_r
        self.prior_c = prior_c
        self.hits = np.zeros(max_fanout + 1)
        self.lookups = np.zeros(max_fanout + 1)
        self.decay = decay

    def observe(self, fanout: np.ndarray, is_hit: np.ndarray) -> None:
        fanout = np.clip(fanout, 0, len(self.hits) - 1)
        self.hits *= self.decay
        self.lookups *= self.decay
        np.add.at(self.lookups, fanout, 1.0)
        np.add.at(self.hits, fanout, is_hit.astype(np.float64))

    def _fit(self) -> tuple[float, float] | None:
        seen = (self.lookups >= 4.0) & (np.arange(len(self.lookups)) >= 1)
        if seen.sum() < 2:
            return None
        miss = np.clip(1.0 - self.hits[seen] / self.lookups[seen], 1e-3, 1.0)
        log_f = np.log(np.nonzero(seen)[0].astype(np.float64))
        slope, intercept = np.polyfit(log_f, np.log(miss), 1, w=np.sqrt(self.lookups[seen]))
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            return None
        return min(max(-float(slope), 0.1), 10.0), float(np.exp(intercept))

    def law(self) -> tuple[float, float]:
        """(r, c) of the fitted law, or of the prior before there is a fit."""
        fit = self._fit()
        return (self.prior_r, self.prior_c) if fit is None else fit


class LinearCost:
    """Time of a forward pass as a + b * rows: exponentially weighted least squares
    over (rows, seconds). With ``relative_slope`` the slope is shrunk towards a prior
    line on which one more row adds ``relative_slope`` of a one-row pass (a GPU: ~1%;
    a CPU core: ~3%), as much as PRIOR_SPREAD rows of spread would weigh: a narrow spread
    of observed row counts (JIT steps at 1 row, branch steps at 2-3) cannot tell a slope
    from noise, a wide one can."""

    PRIOR_SPREAD = 4.0  # rows

    def __init__(self, prior_fixed: float, prior_per_row: float, decay: float = 0.98,
                 relative_slope: float | None = None):
        self.prior_fixed = prior_fixed
        self.prior_per_row = prior_per_row
        self.relative_slope = relative_slope
        self.decay = decay
        self.sums = np.zeros(5)  # weight, x, y, x*x, x*y

    def observe(self, rows: int, seconds: float) -> None:
        self.sums *= self.decay
        self.sums += (1.0, rows, seconds, rows * rows, rows * seconds)

    @property
    def observed(self) -> bool:
        return bool(self.sums[0] > 1e-9)

    def predict(self, rows: int) -> float:
        weight, sx, sy, sxx, sxy = self.sums
        if weight < 1e-9:
            return self.prior_fixed + self.prior_per_row * rows
        mean_x, mean_y = sx / weight, sy / weight
        variance = max(sxx / weight - mean_x ** 2, 0.0)
        covariance = sxy / weight - mean_x * mean_y
        if self.relative_slope is not None:  # prior: y = one_row * (1 + rho * (x - 1))
            one_row = mean_y / (1.0 + self.relative_slope * (mean_x - 1.0))
            shrink = self.PRIOR_SPREAD ** 2
            slope = (covariance + shrink * self.relative_slope * one_row) / (variance + shrink)
        elif variance > 1e-6:
            slope = covariance / variance
        else:
            slope = self.prior_per_row
        slope = max(slope, 0.0)
        fixed = max(mean_y - slope * mean_x, 0.0)
        return fixed + slope * rows
