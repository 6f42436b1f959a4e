"""The two routes of a speculating step (``mode: ssd`` / ``sd`` fix one; ``auto`` chooses
per step, see ``plan_choice``), as strategies the engine calls.

``ssd``: the speculation cache. Each step looks the outcomes up in the cache built during
the last target step; misses get a backup (a just-in-time neural draft or the n-gram,
chosen by the speed model); a cache build for the next round follows the reply.
``sd``: the baseline. No cache; after every outcome the draft runs just in time, K tokens.
"""
from __future__ import annotations

import numpy as np

from vllm_ssd.server.speculation.policy import SpeculationPolicy


class SpeculationCacheMode:
    name = "ssd"
    builds_cache = True

    def backup_plan(self, policy: SpeculationPolicy, batch_size: int, num_missed: int,
                    max_drafts: int) -> tuple[str, int]:
        """(backup kind, depth) for the rows the cache missed."""
        depth = policy.plan.depth
        return policy.choose_backup(batch_size, policy.jit_seconds(num_missed, depth)), depth

    def needs_catch_up(self, uncached: np.ndarray, max_drafts: int) -> np.ndarray:
        """Rows whose draft KV lags by more than one round (new or resynchronised requests)
        are prefilled in the cache build, off the critical path: no drafts this round."""
        return uncached > max_drafts + 1


class DraftAfterOutcomeMode:
    name = "sd"
    builds_cache = False

    def backup_plan(self, policy: SpeculationPolicy, batch_size: int, num_missed: int,
                    max_drafts: int) -> tuple[str, int]:
        return "neural", max_drafts

    def needs_catch_up(self, uncached: np.ndarray, max_drafts: int) -> np.ndarray:
        return np.zeros(len(uncached), dtype=bool)


MODES = {mode.name: mode for mode in (SpeculationCacheMode(), DraftAfterOutcomeMode())}
