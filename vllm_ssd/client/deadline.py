"""How long the proposer waits for a step's drafts before the step goes on without them.

Waiting longer than a step's drafts are worth stalls every request of the batch, so the
wait is short and measured: a margin over the recent reply times (their 90th
percentile), at least one target step (drafts are worth about that much), between a
floor (scheduling noise) and a ceiling (the longest stall a slow server may cause).
Until enough replies were seen the ceiling applies; ``step_deadline_ms`` overrides it all.
"""
from __future__ import annotations

import numpy as np

DEADLINE_FLOOR_S = 0.1
DEADLINE_CEILING_S = 1.0
REPLY_MARGIN = 4.0  # x the 90th percentile of recent reply times
MIN_REPLIES = 8  # replies seen before the measured deadline replaces the ceiling
WINDOW = 64  # recent replies kept


def step_deadline_s(reply_times_s: np.ndarray, target_step_s: float,
                    floor_s: float = DEADLINE_FLOOR_S,
                    ceiling_s: float = DEADLINE_CEILING_S) -> float:
    """reply_times_s [N]: recent waits for step replies; target_step_s: recent target step
    (0 = unknown). Pure."""
    if len(reply_times_s) < MIN_REPLIES:
        return ceiling_s
    typical = float(np.quantile(reply_times_s, 0.9))
    return float(np.clip(max(REPLY_MARGIN * typical, target_step_s), floor_s, ceiling_s))


class StepDeadline:
    """The recent reply times and target step, and the deadline they give."""

    def __init__(self, override_ms: float | None = None):
        self.override_s = None if override_ms is None else override_ms / 1e3
        self.replies = np.zeros(WINDOW)  # ring buffer of reply times, seconds
        self.num_replies = 0
        self.target_step_s = 0.0

    def observe_reply(self, seconds: float) -> None:
        """A reply's wait (a late one counts with its real, longer wait)."""
        self.replies[self.num_replies % WINDOW] = seconds
        self.num_replies += 1

    def observe_target_step(self, seconds: float) -> None:
        if seconds > 0:
            self.target_step_s = seconds if self.target_step_s == 0 else \
                0.8 * self.target_step_s + 0.2 * seconds

    def seconds(self) -> float:
        if self.override_s is not None:
            return self.override_s
        return step_deadline_s(self.replies[:min(self.num_replies, WINDOW)], self.target_step_s)
