"""SSD metrics: the periodic log line, the ``vllm:ssd_*`` Prometheus series and
the offline accessor ``get_ssd_metrics(llm)``.

The draft server owns the cumulative counters (carried across restarts). Readers
ask it over its private socket: a Prometheus collector registered in the process
that built the engine config (the API server for ``vllm serve``, the ``LLM``
process offline) scans that process's runtime directory at every scrape, so the
same numbers reach ``/metrics`` and ``LLM.get_metrics()``.
"""
from __future__ import annotations

import glob
import logging
import os
import time

from vllm_ssd.client.runtime_files import process_root

logger = logging.getLogger(__name__)

# (prometheus name, stats key or vector prefix, label name, help)
COUNTERS = (
    ("vllm:ssd_cache_lookups", "lookups", "", "Speculation-cache lookups (rows with an outcome)"),
    ("vllm:ssd_cache_hits", "hits", "", "Lookups answered from the speculation cache"),
    ("vllm:ssd_drafted_tokens", "drafted_tokens", "", "Draft tokens vLLM verified"),
    ("vllm:ssd_accepted_tokens", "accepted_tokens", "", "Draft tokens accepted by the target"),
    ("vllm:ssd_build_rounds", "build_rounds", "", "Speculation-cache builds"),
    ("vllm:ssd_build_seconds", "build_seconds", "", "Time spent building the cache"),
    ("vllm:ssd_branches", "branches", "", "Branches pre-drafted"),
    ("vllm:ssd_server_restarts", "restarts", "", "Draft server restarts"),
    ("vllm:ssd_deadline_misses", "deadline_misses", "", "Steps whose drafts came after the "
     "step deadline (decoded without drafts)"),
    ("vllm:ssd_rejected_frames", "rejected_frames", "", "Frames the draft server dropped "
     "(malformed, inconsistent, or from another peer)"),
    ("vllm:ssd_foreign_frames", "foreign_frames", "", "Dropped frames that came from a peer "
     "other than the proposer"),
    ("vllm:ssd_rows_without_kv", "rows_without_kv", "", "Rows decoded without drafts because "
     "the draft's KV cache was full (admitted again as blocks free up)"),
    ("vllm:ssd_accepted_length", "accepted_length", "k", "Rounds by number of accepted drafts"),
    ("vllm:ssd_accepted_per_position", "accepted_per_pos", "position", "Accepted drafts per position"),
    ("vllm:ssd_proposed_per_position", "proposed_per_pos", "position", "Proposed drafts per position"),
    ("vllm:ssd_hits_per_k", "hits_per_k", "k", "Cache hits by accepted count k"),
    ("vllm:ssd_lookups_per_k", "lookups_per_k", "k", "Cache lookups by accepted count k"),
)

PLAN_STEPS = {"off": "steps_without_speculation", "sd": "steps_sd", "ssd": "steps_ssd"}


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


def read_server_stats(runtime_dir: str, timeout_s: float = 2.0) -> dict[str, dict[str, float] | None]:
    """The stats of each draft-server client under ``runtime_dir``, by its ``draft-*.addr``
    file (the current server's socket path and read-only stats key, and the restarts the
    client counted: no reading reports fewer); where no server answered (it is
    restarting) only those restarts, or None."""
    import zmq

    readings: dict[str, dict[str, float] | None] = {}
    context = zmq.Context.instance()
    for address in sorted(glob.glob(os.path.join(runtime_dir, "**", "draft-*.addr"), recursive=True)):
        try:
            path, key, client_counts = _read_address_file(address)
        except OSError:  # the client is shutting down
            continue
        stats = _ask_server(context, path, key, timeout_s) if os.path.exists(path) else None
        readings[address] = _with_client_counts(stats, client_counts)
    return readings


def _with_client_counts(stats: dict[str, float] | None,
                        counts: dict[str, float]) -> dict[str, float] | None:
    """A server's reading with no counter below the client's own count of it; the
    client's counts alone where no server answered (None without any)."""
    if stats is None:
        return dict(counts) or None
    return {**stats, **{name: max(value, stats.get(name, 0.0)) for name, value in counts.items()}}


def _read_address_file(address: str) -> tuple[str, str, dict[str, float]]:
    """(socket path, stats key, counters the client keeps: ``name value`` lines) of an
    address file (see ``ServerConnection``); the path is "" while no server runs."""
    with open(address) as handle:
        lines = handle.read().split("\n")
    path, key = (lines + ["", ""])[:2]
    counts = {}
    for line in lines[2:]:
        name, _, value = line.partition(" ")
        try:
            counts[name] = float(value)
        except ValueError:
            continue
    return path.strip(), key.strip(), counts


def _ask_server(context, path: str, key: str, timeout_s: float) -> dict[str, float] | None:
    """The stats of the server on ``path``; None where it does not answer in time."""
    import zmq

    from vllm_ssd import protocol as P

    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(f"ipc://{path}")
        socket.send(P.encode(P.StatsRequest(key=key)))
        if socket.poll(int(timeout_s * 1000)):
            return getattr(P.decode(socket.recv()), "stats", None)
        return None
    finally:
        socket.close()


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


class ServerTotals:
    """The sum over live clients (address files) of their ``MonotonicTotals``; a client
    whose address file is gone (its engine shut down) leaves the sum."""

    def __init__(self):
        self.by_client: dict[str, MonotonicTotals] = {}

    def update(self, readings: dict[str, dict[str, float] | None]) -> dict[str, float]:
        self.by_client = {address: self.by_client.get(address) or MonotonicTotals()
                          for address in readings}
        total: dict[str, float] = {}
        for address, stats in readings.items():
            for key, value in self.by_client[address].update(stats or {}).items():
                total[key] = total.get(key, 0.0) + value
        return total


TOTALS_ATTRIBUTE = "_vllm_ssd_totals"  # the ServerTotals of an LLM's get_ssd_metrics


def get_ssd_metrics(llm) -> dict[str, float]:
    """Offline accessor: cumulative SSD counters (and derived rates) of an ``LLM``."""
    from vllm_ssd.settings import ADDITIONAL_CONFIG_KEY

    config = llm.llm_engine.vllm_config.additional_config or {}
    runtime_dir = (config.get(ADDITIONAL_CONFIG_KEY) or {}).get("runtime_dir")
    if not runtime_dir:
        raise ValueError("this LLM does not use vllm_ssd")
    if not hasattr(llm, TOTALS_ATTRIBUTE):
        setattr(llm, TOTALS_ATTRIBUTE, ServerTotals())
    stats = getattr(llm, TOTALS_ATTRIBUTE).update(read_server_stats(runtime_dir))
    return {**stats, **summary(stats)}


class SSDMetricsCollector:
    """Prometheus collector for every draft server of this process's engines. Every
    series is present from the first scrape on and stays monotonic across restarts."""

    def __init__(self, read=None):
        """read: () -> stats by client, as ``read_server_stats`` (default: this process's)."""
        self.read = read or (lambda: read_server_stats(process_root(), timeout_s=1.0))
        self.totals = ServerTotals()

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.totals.update(self.read())
        for name, key, label, help_text in COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=[label] if label else None)
            if label:
                for stat_key in sorted(k for k in stats if k.startswith(key + ".")):
                    family.add_metric([stat_key.partition(".")[2]], stats[stat_key])
            else:
                family.add_metric([], stats.get(key, 0.0))
            yield family
        for kind in ("neural", "ngram"):
            yield CounterMetricFamily(f"vllm:ssd_backup_{kind}_rows", f"Rows drafted by the "
                                      f"{kind} backup", value=stats.get(f"backup_{kind}_rows", 0.0))
        plans = CounterMetricFamily("vllm:ssd_steps_by_plan", "Draft-server steps by plan: "
                                    "no drafts, just-in-time drafts, speculation cache",
                                    labels=["plan"])
        for plan, key in PLAN_STEPS.items():
            plans.add_metric([plan], stats.get(key, 0.0))
        yield plans
        rates = summary(stats)
        yield GaugeMetricFamily("vllm:ssd_stood_aside", "1 once speculation stood aside for "
                                "good (it measured a loss)", value=stats.get("stood_aside", 0.0))
        yield GaugeMetricFamily("vllm:ssd_cache_hit_rate", "Cache hits / lookups", value=rates["hit_rate"])
        yield GaugeMetricFamily("vllm:ssd_build_fraction", "Mean cache build time / target step",
                                value=rates["mean_build_fraction"])


def register_collector() -> None:
    """Idempotent: one collector per process (it scans this process's runtime root)."""
    from prometheus_client import REGISTRY

    collector_names = {type(c).__name__ for c in getattr(REGISTRY, "_collector_to_names", {})}
    if SSDMetricsCollector.__name__ not in collector_names:
        REGISTRY.register(SSDMetricsCollector())
