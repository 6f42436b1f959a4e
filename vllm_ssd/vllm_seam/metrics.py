"""SSD metrics inside vLLM: the ``vllm:ssd_*`` Prometheus series and the offline accessor
``get_ssd_metrics(llm)``.

The draft server owns the cumulative counters (carried across restarts). Both exports
read them one way, ``client.stats_totals.SSDTotals`` over ``client.stats_reader``: a
Prometheus collector registered in the process that built the engine config (the API
server for ``vllm serve``, the ``LLM`` process offline) scans that process's runtime
directory at every scrape, so the same numbers reach ``/metrics`` and ``LLM.get_metrics()``.
"""
from __future__ import annotations

from functools import partial

from vllm_ssd.client.runtime_files import process_root
from vllm_ssd.client.stats_reader import read_server_stats
from vllm_ssd.client.stats_totals import SSDTotals

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


TOTALS_ATTRIBUTE = "_vllm_ssd_totals"  # the SSDTotals of an LLM's get_ssd_metrics


def get_ssd_metrics(llm) -> dict[str, float]:
    """Offline accessor: cumulative SSD counters (and derived rates) of an ``LLM``."""
    from vllm_ssd.settings import ADDITIONAL_CONFIG_KEY

    config = llm.llm_engine.vllm_config.additional_config or {}
    runtime_dir = (config.get(ADDITIONAL_CONFIG_KEY) or {}).get("runtime_dir")
    if not runtime_dir:
        raise ValueError("this LLM does not use vllm_ssd")
    if not hasattr(llm, TOTALS_ATTRIBUTE):
        setattr(llm, TOTALS_ATTRIBUTE, SSDTotals(partial(read_server_stats, runtime_dir)))
    return getattr(llm, TOTALS_ATTRIBUTE).current()


class SSDMetricsCollector:
    """Prometheus collector for every draft server of this process's engines. Every
    series is present from the first scrape on and stays monotonic across restarts."""

    def __init__(self, read=None):
        """read: () -> stats by client, as ``read_server_stats`` (default: this process's)."""
        self.totals = SSDTotals(read or (lambda: read_server_stats(process_root(), timeout_s=1.0)))

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.totals.current()
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
        yield GaugeMetricFamily("vllm:ssd_stood_aside", "1 once speculation stood aside for "
                                "good (it measured a loss)", value=stats.get("stood_aside", 0.0))
        yield GaugeMetricFamily("vllm:ssd_cache_hit_rate", "Cache hits / lookups", value=stats["hit_rate"])
        yield GaugeMetricFamily("vllm:ssd_build_fraction", "Mean cache build time / target step",
                                value=stats["mean_build_fraction"])


def register_collector() -> None:
    """Idempotent: one collector per process (it scans this process's runtime root)."""
    from prometheus_client import REGISTRY

    collector_names = {type(c).__name__ for c in getattr(REGISTRY, "_collector_to_names", {})}
    if SSDMetricsCollector.__name__ not in collector_names:
        REGISTRY.register(SSDMetricsCollector())
