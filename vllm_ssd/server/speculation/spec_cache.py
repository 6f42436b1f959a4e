"""The speculation cache: pre-drafted continuations keyed by (request, k, t*).

Dense layout, one cell per (slot, k, fan-out rank f):
  ``keys[slot, k, f]``        the guessed t* (-1 = empty)
  ``drafts[slot, k, f, :]``   the drafts prepared for that outcome
  ``num_drafted[slot, k, f]`` how many of them were decoded before the round ended
Lookup of a whole batch is one gather and one broadcast compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LookupResult:
    is_hit: np.ndarray  # [R] bool
    drafts: np.ndarray  # [R, max_depth], -1 padded
    num_drafts: np.ndarray  # [R]


class SpeculationCache:
    def __init__(self, max_slots: int, max_drafts: int, max_fanout: int):
        self.max_drafts = max_drafts
        self.keys = np.full((max_slots, max_drafts + 1, max_fanout), -1, dtype=np.int64)
        self.drafts = np.full((max_slots, max_drafts + 1, max_fanout, max_drafts), -1,
                              dtype=np.int32)
        self.num_drafted = np.zeros((max_slots, max_drafts + 1, max_fanout), dtype=np.int64)

    def clear(self, slots: np.ndarray | None = None) -> None:
        index = slice(None) if slots is None else slots
        self.keys[index] = -1
        self.num_drafted[index] = 0

    def insert_keys(self, slots: np.ndarray, k: np.ndarray, rank: np.ndarray,
                    tokens: np.ndarray) -> None:
        """Registers the branch roots (one per element): outcome (k, token) of slot."""
        self.keys[slots, k, rank] = tokens
        self.num_drafted[slots, k, rank] = 0

    def record_drafts(self, slots: np.ndarray, k: np.ndarray, rank: np.ndarray,
                      drafts: np.ndarray, depth: int) -> None:
        """Stores the first ``depth`` drafted tokens of each branch (drafts [N, >= depth])."""
        self.drafts[slots, k, rank, :depth] = drafts[:, :depth]
        self.num_drafted[slots, k, rank] = depth

    def lookup(self, slots: np.ndarray, k: np.ndarray, tokens: np.ndarray,
               valid: np.ndarray) -> LookupResult:
        """Rows with ``valid`` outcomes (k, t*) look for their pre-drafted continuation."""
        k_safe = np.clip(k, 0, self.max_drafts)
        candidates = self.keys[slots, k_safe]  # [R, F]
        matches = (candidates == tokens[:, None]) & (candidates >= 0)
        rank = matches.argmax(axis=1)
        num = self.num_drafted[slots, k_safe, rank]
        is_hit = valid & matches.any(axis=1) & (num > 0)
        drafts = self.drafts[slots, k_safe, rank]
        return LookupResult(is_hit, np.where(is_hit[:, None], drafts, -1),
                            np.where(is_hit, num, 0))

    def any_branch(self, slots: np.ndarray, k: np.ndarray) -> LookupResult:
        """The first cached branch for (slot, k) whatever its token (simulated hits)."""
        k_safe = np.clip(k, 0, self.max_drafts)
        num = self.num_drafted[slots, k_safe, 0]
        is_hit = num > 0
        drafts = self.drafts[slots, k_safe, 0]
        return LookupResult(is_hit, np.where(is_hit[:, None], drafts, -1), num)
