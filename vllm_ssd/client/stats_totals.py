"""The totals every reader of SSD counters sees: ``/metrics`` and ``get_ssd_metrics``
both go through ``SSDTotals.current()``; the benchmarks' counter readings too."""
from __future__ import annotations

from typing import Callable

Readings = dict[str, "dict[str, float] | None"]  # stats by client address file


def summary(stats: dict[str, float]) -> dict[str, float]:
    """Derived rates from cumulative (or delta) stats."""
    def ratio(a: str, b: str) -> float:
        return stats.get(a, 0.0) / stats[b] if stats.get(b) else 0.0
    return {
        "hit_rate": ratio("hits", "lookups"),
        "mean_accepted_tokens": ratio("accepted_tokens", "outcomes"),
        "mean_build_fraction": ratio("build_fraction_sum", "build_rounds"),
        "branches_per_round": ratio("branches", "build_rounds"),
        "mean_branch_depth": ratio("branch_depth_sum", "build_rounds"),
        "mean_round_trip_ms": 1000 * ratio("round_trip_seconds", "round_trips"),
        "mean_hit_round_trip_ms": 1000 * ratio("round_trip_all_hit_seconds", "round_trips_all_hit"),
    }


class MonotonicTotals:
    """The counters of one client's servers as last read, never lower: while its draft
    server restarts (or a read times out) every counter keeps its last value instead of
    vanishing, and a replacement starting from older counts does not pull them down."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    def update(self, stats: dict[str, float]) -> dict[str, float]:
        for key, value in stats.items():
            self.totals[key] = max(self.totals.get(key, 0.0), value)
        return dict(self.totals)


class SSDTotals:
    """The one owner of what readers see: the sum over live clients (address files) of
    their ``MonotonicTotals``; a client whose address file is gone (its engine shut down)
    leaves the sum."""

    def __init__(self, read: Callable[[], Readings]):
        """read: () -> stats by client (``stats_reader.read_server_stats`` of a runtime dir)."""
        self.read = read
        self.by_client: dict[str, MonotonicTotals] = {}

    def update(self, readings: Readings) -> dict[str, float]:
        """The counters summed over the clients of ``readings`` (no derived rates)."""
        self.by_client = {address: self.by_client.get(address) or MonotonicTotals()
                          for address in readings}
        total: dict[str, float] = {}
        for address, stats in readings.items():
            for key, value in self.by_client[address].update(stats or {}).items():
                total[key] = total.get(key, 0.0) + value
        return total

    def current(self) -> dict[str, float]:
        """One reading: the summed counters and their derived rates (``summary``)."""
        stats = self.update(self.read())
        return {**stats, **summary(stats)}
