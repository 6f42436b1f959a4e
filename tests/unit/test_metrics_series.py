"""Every vllm:ssd_* series is on /metrics from the first scrape and stays there, monotonic,
while a draft server restarts (no server answers) or a new one starts from older counts."""
from vllm_ssd.client.stats_totals import MonotonicTotals, SSDTotals
from vllm_ssd.vllm_seam.metrics import COUNTERS, SSDMetricsCollector

ADDR = "/run/draft-1-ab.addr"


def scrape(collector) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect()
            for sample in family.samples}


def test_series_stay_present_and_monotonic_through_a_restart():
    reads = iter([
        {ADDR: {"lookups": 10.0, "hits": 4.0, "deadline_misses": 1.0, "accepted_length.0": 3.0}},
        {ADDR: None},  # the server restarts: nobody answers
        {ADDR: {"lookups": 9.0, "hits": 4.0}},  # the replacement starts from older counts
        {ADDR: {"lookups": 12.0, "hits": 6.0, "deadline_misses": 2.0, "accepted_length.0": 5.0}},
    ])
    collector = SSDMetricsCollector(read=lambda: next(reads))
    scrapes = [scrape(collector) for _ in range(4)]
    names = set(scrapes[0])
    assert {"vllm:ssd_cache_lookups_total", "vllm:ssd_deadline_misses_total",
            "vllm:ssd_rejected_frames_total", "vllm:ssd_foreign_frames_total",
            "vllm:ssd_rows_without_kv_total", "vllm:ssd_stood_aside"} <= names
    for later in scrapes[1:]:
        assert set(later) == names
    for name in names - {"vllm:ssd_cache_hit_rate", "vllm:ssd_build_fraction"}:
        values = [s[name] for s in scrapes]
        assert values == sorted(values), name
    assert scrapes[1]["vllm:ssd_cache_lookups_total"] == 10.0
    assert scrapes[2]["vllm:ssd_cache_lookups_total"] == 10.0
    assert scrapes[3]["vllm:ssd_cache_lookups_total"] == 12.0
    assert scrapes[3]["vllm:ssd_accepted_length_total"] == 5.0


def test_every_scalar_counter_is_present_before_any_server_answered():
    collector = SSDMetricsCollector(read=dict)
    names = set(scrape(collector))
    scalar_names = {name + "_total" for name, _, label, _ in COUNTERS if not label}
    assert scalar_names <= names


def test_monotonic_totals_never_drop():
    totals = MonotonicTotals()
    assert totals.update({"a": 2.0}) == {"a": 2.0}
    assert totals.update({"a": 1.0, "b": 1.0}) == {"a": 2.0, "b": 1.0}
    assert totals.update({}) == {"a": 2.0, "b": 1.0}


def test_a_shut_down_engine_leaves_the_sum_a_live_one_stays():
    totals = SSDTotals(read=dict)
    assert totals.update({"a.addr": {"lookups": 5.0}, "b.addr": {"lookups": 3.0}}) == \
        {"lookups": 8.0}
    assert totals.update({"a.addr": None, "b.addr": {"lookups": 4.0}}) == {"lookups": 9.0}
    assert totals.update({"b.addr": {"lookups": 4.0}}) == {"lookups": 4.0}  # a.addr removed


def test_every_reader_sees_counters_with_their_rates():
    readings = {"a.addr": {"lookups": 8.0, "hits": 6.0}, "b.addr": {"lookups": 2.0, "hits": 0.0}}
    current = SSDTotals(read=lambda: readings).current()
    assert current["lookups"] == 10.0 and current["hit_rate"] == 0.6
    gauges = scrape(SSDMetricsCollector(read=lambda: readings))
    assert gauges["vllm:ssd_cache_hit_rate"] == current["hit_rate"]
