"""Markdown table of the GPU benchmark records (timing only: dummy weights, synthetic
acceptance, simulated cache hits).   python benchmarks/gpu/report_gpu.py FILE.jsonl ..."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from vllm_ssd.saguaro.speed_model import server_round_throughput  # noqa: E402

BUILD_DEADLINE = 1.5  # the default build_deadline of the runs (target steps)


def load(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            case = record[0]["case"]
            for run in record[1:]:
                rows.append({"file": Path(path).name, "gpus": 2, **case, **run})
    return rows


def ssd_columns(row: dict, plain: dict | None) -> dict:
    d = row["delta"]
    out = {}
    drafts = d.get("vllm:spec_decode_num_drafts", 0)
    if drafts:
        out["acc. len"] = f"{1 + d['vllm:spec_decode_num_accepted_tokens'] / drafts:.2f}"
    if d.get("ssd.lookups"):
        out["hit rate"] = f"{d['ssd.hits'] / d['ssd.lookups']:.0%}"
    if d.get("ssd.build_rounds"):
        out["build ms"] = f"{1000 * d['ssd.build_seconds'] / d['ssd.build_rounds']:.1f}"
    if d.get("ssd.target_steps"):  # vLLM's step as the proposer saw it (verification included)
        out["SSD step ms"] = f"{1000 * d['ssd.target_step_seconds'] / d['ssd.target_steps']:.2f}"
    if d.get("ssd.round_trips"):
        out["round trip ms"] = f"{1000 * d['ssd.round_trip_seconds'] / d['ssd.round_trips']:.2f}"
    if d.get("ssd.round_trips_all_hit"):
        out["hit round trip ms"] = f"{1000 * d['ssd.round_trip_all_hit_seconds'] / d['ssd.round_trips_all_hit']:.2f}"
    if "ssd.build_wait_seconds" in d and d.get("ssd.build_rounds"):  # a step's wait for its build
        out["build wait ms"] = f"{1000 * d['ssd.build_wait_seconds'] / d['ssd.build_rounds']:.2f}"
    if plain and d.get("ssd.lookups") and d.get("ssd.build_rounds") and drafts:
        step_ms = plain["ms_per_step_per_seq"]  # T_v: one plain decoding step
        t_p = 1000 * d["ssd.build_seconds"] / d["ssd.build_rounds"] / step_ms
        out["T_v ms"] = f"{step_ms:.2f}"
        out["T_p/T_v"] = f"{t_p:.2f}"
        out["speed model tok/s"] = f"{plain['tok_per_s'] * round_model(row, t_p, step_ms):.0f}"
    return out


def round_model(row: dict, t_p: float, step_ms: float) -> float:
    """The server's round model (what its planner maximises) at the run's measured hit rate,
    tokens after hits and after backups, build time and JIT latency: tokens per plain step."""
    d = row["delta"]
    e_hit = 1 + d["ssd.accepted_after_hit"] / max(d["ssd.outcomes_after_hit"], 1)
    e_miss = 1 + d["ssd.accepted_after_backup"] / max(d["ssd.outcomes_after_backup"], 1)
    jit_ms = 1000 * d.get("ssd.backup_neural_seconds", 0.0) / max(d.get("ssd.backup_neural_steps", 0.0), 1)
    p_hit = d["ssd.hits"] / d["ssd.lookups"]
    return server_round_throughput(row["batch_size"], p_hit, e_hit, e_miss, t_p,
                                   jit_ms / step_ms, BUILD_DEADLINE)


def gpus_used(row: dict) -> int:
    """vLLM's own methods run on the target's GPU; vllm_ssd's draft server on the second."""
    return row["gpus"] if row["method"] in ("ssd", "ssd_sd") else 1


def markdown(rows: list[dict]) -> str:
    columns = ["acc. len", "hit rate", "T_v ms", "SSD step ms", "build ms", "T_p/T_v", "round trip ms",
               "hit round trip ms", "build wait ms", "speed model tok/s"]
    lines = ["| pair | GPUs | method | run | bs | tok/s | tok/s per GPU | vs plain | "
             + " | ".join(columns) + " |", "|" + "---|" * (8 + len(columns))]
    key = ("pair", "gpus", "batch_size")
    for row in sorted(rows, key=lambda r: (r["pair"], -r["gpus"], r["batch_size"], r["method"],
                                           r["file"])):
        plains = [p for p in rows if p["method"] == "plain" and all(p[k] == row[k] for k in key)]
        # the same run's plain rows when it has them, else the first run's
        plain = next((p for p in plains if p["file"] == row["file"]), plains[0] if plains else None)
        extra = ssd_columns(row, plain) if not row["method"].startswith("plain") else {}
        ratio = f"{row['tok_per_s'] / plain['tok_per_s']:.2f}x" if plain else "–"
        lines.append(f"| {row['pair']} | {row['gpus']} | {row['method']} | {row['file']} | {row['batch_size']} | "
                     f"{row['tok_per_s']:.0f} | {row['tok_per_s'] / gpus_used(row):.0f} | {ratio} | "
                     + " | ".join(extra.get(c, "–") for c in columns) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(load(sys.argv[1:])))
