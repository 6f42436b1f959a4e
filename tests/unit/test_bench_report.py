"""The offline benchmark's report from raw rows: SSD's rates only where measured (no
"0.00 / 0%" for an engine that did not speculate), the plan that ran, the draft server's
counters as deltas, one plot panel per temperature that ran, where the time went."""
import struct

import pytest

from benchmarks import report
from benchmarks.bench_offline import engine_timing, where_the_time_went
from benchmarks.run_engine import settle
from benchmarks.summarize import plan_label, row_metrics, ssd_delta

DATASETS = ("humaneval", "mtbench")


def ssd_counters(steps=0.0, off=0.0, lookups=0.0, hits=0.0, outcomes=0.0, accepted=0.0,
                 stood_aside=0.0) -> dict:
    """Cumulative draft-server counters as get_ssd_metrics gives them (with its rates)."""
    counters = {"steps": steps, "rows": steps, "steps_without_speculation": off,
                "lookups": lookups, "hits": hits, "outcomes": outcomes,
                "accepted_tokens": accepted, "build_rounds": lookups,
                "build_fraction_sum": 0.9 * lookups, "rows_without_kv": 0.0,
                "stood_aside": stood_aside, "accepted_length.0": outcomes}
    counters["hit_rate"] = hits / lookups if lookups else 0.0  # rates: never diffed
    counters["mean_accepted_tokens"] = accepted / outcomes if outcomes else 0.0
    return counters


def raw_row(readings: list[dict | None], drafts: list[tuple[int, int]], method="ssd") -> dict:
    """Batch size 1, greedy: batch i runs between readings i and i + 1 (one prompt, of
    DATASETS in turn); drafts: vLLM's cumulative (drafts, accepted) at each reading."""
    batches = []
    for i in range(len(readings) - 1):
        before, after = ({"vllm:spec_decode_num_drafts": drafts[j][0],
                          "vllm:spec_decode_num_draft_tokens": 4 * drafts[j][0],
                          "vllm:spec_decode_num_accepted_tokens": drafts[j][1],
                          "ssd": readings[j]} for j in (i, i + 1))
        batches.append({"datasets": [DATASETS[i % 2]], "wall_s": 2.0, "before": before,
                        "after": after, "requests": [{"tokens": 11, "ttft": 0.5, "end": 1.5}]})
    return {"method": method, "placement": "1+1 cores", "batch_size": 1, "temperature": 0.0,
            "k": 4, "budget": 6, "batches": batches}


def test_an_engine_that_never_speculated_shows_no_rates_and_says_why():
    """Every step switched off: no lookup, no draft. The old table said 0.00 / 0%."""
    readings = [ssd_counters(steps=10 * i, off=10 * i) for i in range(3)]
    row = row_metrics(raw_row(readings, [(0, 0)] * 3))
    assert "hit_rate" not in row and "mean_accepted_length" not in row
    assert row["plan"] == "auto" and row["no_speculation_share"] == 1.0
    assert report.plan_cell(row) == "auto (100% of steps off)"
    table = report.markdown([row])
    assert "0.00 / 0%" not in table
    assert table.splitlines()[-1] == "| ssd | 1+1 cores | – (100% of steps off) | – (100% of steps off) |"


def test_speculation_that_stood_aside_is_named_in_both_tables():
    readings = [ssd_counters(steps=4, lookups=3, hits=3, outcomes=3, accepted=6),
                ssd_counters(steps=8, lookups=6, hits=5, outcomes=6, accepted=9, stood_aside=1.0),
                ssd_counters(steps=8, lookups=6, hits=5, outcomes=6, accepted=9, stood_aside=1.0)]
    row = row_metrics(raw_row(readings, [(3, 6), (6, 9), (6, 9)]))
    assert row["plan"] == "stood aside"
    assert row["hit_rate"] == pytest.approx(2 / 3) and row["mean_accepted_length"] == 2.0
    assert row["per_dataset"]["mtbench"] == {"plan": "stood aside"}  # the server saw no step
    line = report.side_by_side([row]).splitlines()[2]
    assert line.startswith("| vllm_ssd default | stood aside | 1+1 cores |")
    assert report.dataset_cell(row["per_dataset"]["humaneval"]) == "2.00 / 67% (stood aside)"


def test_accepted_length_and_hit_rate_come_from_the_servers_counters_by_dataset():
    """1 + accepted / outcomes (as vLLM's 1 + accepted / drafts) and hits / lookups, per
    dataset, even where vLLM's spec-decode counters are missing."""
    readings = [ssd_counters(), ssd_counters(steps=10, lookups=8, hits=6, outcomes=8, accepted=16),
                ssd_counters(steps=30, lookups=28, hits=7, outcomes=18, accepted=21)]
    raw = raw_row(readings, [(0, 0)] * 3)
    for batch in raw["batches"]:
        for reading in (batch["before"], batch["after"]):
            reading.pop("vllm:spec_decode_num_drafts")
    per = row_metrics(raw)["per_dataset"]
    assert per["humaneval"]["mean_accepted_length"] == 3.0
    assert per["humaneval"]["hit_rate"] == 0.75
    assert per["mtbench"]["mean_accepted_length"] == 1.5
    assert per["mtbench"]["hit_rate"] == 0.05
    assert report.dataset_cell(per["mtbench"]) == "1.50 / 5%"


def test_the_stats_delta_diffs_counters_only_and_knows_a_missing_reading():
    before = ssd_counters(steps=2, lookups=2, hits=2, outcomes=2, accepted=2)
    after = ssd_counters(steps=5, lookups=4, hits=2, outcomes=4, accepted=8, stood_aside=1.0)
    delta = ssd_delta(before, after)
    assert delta["steps"] == 3 and delta["hits"] == 0 and delta["accepted_tokens"] == 6
    assert not {"hit_rate", "mean_accepted_tokens", "stood_aside", "accepted_length.0"} & set(delta)
    assert ssd_delta(None, after) is None and ssd_delta(before, None) is None


def test_a_batch_without_a_reading_is_left_out_not_counted_as_zero():
    readings = [ssd_counters(), None, ssd_counters(steps=20, lookups=20, hits=10, outcomes=20,
                                                   accepted=20)]
    row = row_metrics(raw_row(readings, [(0, 0), (0, 0), (20, 20)]))
    assert row["unread_batches"] == 2  # both batches touch the missing reading
    assert "hit_rate" not in row and row["plan"] == "auto"


def test_the_plan_column_gives_each_plans_share_of_steps():
    counters = ssd_counters(steps=100, off=10, lookups=60, hits=50, outcomes=90, accepted=180)
    counters.update(steps_sd=25.0, steps_ssd=65.0)
    assert plan_label(counters, "ssd") == "ssd 65% · sd 25% · off 10%"
    assert plan_label({**counters, "steps_sd": 0.0, "steps_ssd": 88.0, "steps_without_speculation": 2.0},
                      "ssd") == "ssd 98%"  # under 5%: left out
    assert plan_label(ssd_counters(steps=10), "ssd_sd") == "sd"  # no plan counters: the mode
    assert plan_label({**counters, "stood_aside": 1.0}, "ssd") == "stood aside"


def test_the_server_counters_are_taken_once_two_readings_agree():
    readings = iter([None, {"steps": 1.0}, {"steps": 3.0}, {"steps": 3.0}, {"steps": 9.0}])
    assert settle(lambda: next(readings), sleep=lambda _: None) == {"steps": 3.0}
    assert settle(lambda: None, attempts=3, sleep=lambda _: None) is None


def png_width(path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_one_plot_panel_per_temperature_that_ran(tmp_path):
    readings = [ssd_counters(steps=10 * i, off=10 * i) for i in range(3)]
    rows = [row_metrics(raw_row(readings, [(0, 0)] * 3))]  # T = 0 only, no hit rate
    assert report.speedup_panels(rows) == [0.0]
    assert report.dataset_panels(rows) == [("mean_accepted_length",
                                            "mean accepted length (bs 1, greedy)")]
    report.plots(rows, tmp_path, "")
    one = png_width(tmp_path / "speedup_vs_batch.png")
    report.plots(rows + [{**rows[0], "temperature": 0.7}], tmp_path, "-two")
    assert png_width(tmp_path / "speedup_vs_batch-two.png") == 2 * one
    assert png_width(tmp_path / "acceptance_by_dataset.png") == one


def test_where_the_time_went(tmp_path, caplog):
    timing = engine_timing({"method": "ssd", "placement": "1+1 cores"}, 100.0,
                           [["engine start", 60.0], ["warm-up", 10.0], ["bs=1 T=0", 25.0]])
    assert timing["text"] == ("100 s: engine start 60 s, warm-up 10 s, bs=1 T=0 25 s, "
                              "process start and exit 5 s")
    tsv = tmp_path / "engines.tsv"
    with caplog.at_level("INFO", logger="bench_offline"):
        where_the_time_went([timing], 130.0, str(tsv))
    assert "between engines: 30 s" in caplog.text
    assert tsv.read_text() == ("ssd (1+1 cores)\t100\tengine start 60 s, warm-up 10 s, "
                               "bs=1 T=0 25 s, process start and exit 5 s\n")
