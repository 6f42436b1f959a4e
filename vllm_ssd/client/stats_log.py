"""The proposer's periodic ``SSD metrics:`` log line, from the counters replies carry."""
from __future__ import annotations

import logging
import time

from vllm_ssd.client.stats_totals import summary

logger = logging.getLogger(__name__)


class StatsLogger:
    def __init__(self, interval_s: float, log_fn=logger.info):
        self.interval_s = interval_s
        self.log_fn = log_fn
        self.last_time = time.monotonic()
        self.last: dict[str, float] = {}

    def due(self) -> bool:
        return self.interval_s > 0 and time.monotonic() - self.last_time >= self.interval_s

    def maybe_log(self, stats: dict[str, float]) -> None:
        now = time.monotonic()
        if not self.due():
            return
        delta = {k: v - self.last.get(k, 0.0) for k, v in stats.items()}
        rates = summary(delta)
        self.log_fn(
            "SSD metrics: cache hit rate %.1f%% (%d lookups), mean accepted drafts %.2f, "
            "cache build %.2f of a target step, %.1f branches/round (depth %.1f), backup "
            "neural %d rows / ngram %d rows",
            100 * rates["hit_rate"], delta.get("lookups", 0), rates["mean_accepted_tokens"],
            rates["mean_build_fraction"], rates["branches_per_round"], rates["mean_branch_depth"],
            delta.get("backup_neural_rows", 0), delta.get("backup_ngram_rows", 0))
        self.last, self.last_time = dict(stats), now
