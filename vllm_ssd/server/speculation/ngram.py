"""Zero-latency backup speculator: n-gram prompt lookup over each request's own tokens.

For the longest n in [min_n, max_n] whose trailing n-gram occurred earlier in the
request, propose the tokens that followed its most recent earlier occurrence.
Vectorised over rows (the loop is over n only).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def ngram_drafts(tokens: np.ndarray, lengths: np.ndarray, max_lens: np.ndarray,
                 width: int, min_n: int = 1, max_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """tokens [R, L] (row r valid up to lengths[r]) -> drafts [R, width] (-1 padded), counts [R]."""
    num_rows = len(lengths)
    drafts = np.full((num_rows, width), -1, dtype=np.int32)
    counts = np.zeros(num_rows, dtype=np.int64)
    if num_rows == 0 or width == 0:
        return drafts, counts
    span = int(lengths.max())
    tokens = tokens[:, :span]
    start = np.full(num_rows, -1, dtype=np.int64)  # where the proposal begins
    for n in range(max_n, min_n - 1, -1):
        open_rows = np.nonzero((start < 0) & (lengths > n))[0]
        if open_rows.size == 0 or span <= n:
            continue
        row_len = lengths[open_rows]
        pattern = tokens[open_rows[:, None], row_len[:, None] - n + np.arange(n)]  # [r, n]
        windows = sliding_window_view(tokens[open_rows], n, axis=1)  # [r, span - n + 1, n]
        found = (windows == pattern[:, None, :]).all(axis=-1)
        found &= np.arange(found.shape[1])[None, :] <= (row_len - n - 1)[:, None]
        has = found.any(axis=1)
        last = found.shape[1] - 1 - np.argmax(found[:, ::-1], axis=1)
        start[open_rows[has]] = last[has] + n
    matched = start >= 0
    col = np.arange(width)[None, :]
    positions = start[:, None] + col
    valid = matched[:, None] & (positions < lengths[:, None]) & (col < max_lens[:, None])
    rows = np.nonzero(valid)[0]
    drafts[valid] = tokens[rows, positions[valid]]
    counts = valid.sum(axis=1)
    return drafts, counts
