"""Ragged-batch index helpers: rows grouped in consecutive segments of given lengths."""
from __future__ import annotations

import numpy as np


def segment_offsets(counts: np.ndarray) -> np.ndarray:
    """Each element's index inside its segment: counts [2, 3] -> [0, 1, 0, 1, 2]."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts  # [S]
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)
