"""Offline benchmark on the CPU: plain decoding, vLLM's draft_model SD, vllm_ssd mode sd and
vllm_ssd mode ssd on the same prompts, batch sizes and temperatures.

Core placement: SSD's target runs on CPU 0 and its draft server on CPU 1. The baselines
run twice, with both cores and with CPU 0 only, so the extra draft core is never hidden.

    python benchmarks/bench_offline.py --tag report        # the CPU report (results/cpu/)
    python benchmarks/bench_offline.py --preset demo       # scripts/demo.sh: plain, vLLM SD
                                                           # and SSD once each, bs 1 (.scratch/)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import prompts as prompt_sets  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from benchmarks.report import side_by_side, write_report  # noqa: E402
from benchmarks.summarize import add_comparisons, row_metrics  # noqa: E402

PLACEMENTS = {  # name -> (target cpus, draft cpus)
    "2 cores": ([0, 1], None),
    "1 core": ([0], None),
    "1+1 cores": ([0], "1"),
}
METHOD_PLACEMENTS = {"plain": ["2 cores", "1 core"], "vllm_sd": ["2 cores", "1 core"],
                     "vllm_sd_fixed": ["2 cores", "1 core"],
                     "ssd_sd": ["1+1 cores"], "ssd_ssd": ["1+1 cores"],
                     "ssd": ["1+1 cores"]}
POSITIVE_T_ONLY = {"vllm_sd_fixed"}  # vLLM SD with the #55005 fix: equal to vllm_sd at T = 0
PRESETS = {
    "full": dict(methods="plain,vllm_sd,vllm_sd_fixed,ssd_sd,ssd", batch_sizes=[1, 8],
                 temperatures=[0.0, 0.7], per_dataset=2, max_tokens=64, placements={},
                 max_prompt_chars=None,
                 enforce_eager=False, max_num_batched_tokens=None, out=HERE / "results" / "cpu"),
    "demo": dict(methods="plain,vllm_sd,ssd", batch_sizes=[1], temperatures=[0.0],
                 per_dataset=1, max_tokens=48,
                 # the first CNN/DM article (3,259 characters) took 92-118 s to prefill per
                 # engine on 2 AVX2 cores; the demo takes each dataset's first prompt this short
                 max_prompt_chars=1500,
                 placements={"plain": ["2 cores"], "vllm_sd": ["2 cores"]},
                 enforce_eager=True,  # no torch.compile: each engine starts minutes sooner
                 # vLLM's start-up profiles one forward of this many tokens (2048 by default:
                 # 5 min on 2 AVX2 cores); prompts longer than this are prefilled in chunks
                 max_num_batched_tokens=256,
                 out=Path(os.environ.get("SSD_SCRATCH", HERE.parent / ".scratch")) / "demo"),
}
FULL_BENCHMARK = ("A short run (4 prompts of at most 1,500 characters x 48 tokens, no "
                  "torch.compile): its numbers move with "
                  "other load on this machine.\nThe full benchmark: python benchmarks/"
                  "bench_offline.py --tag report (about 2 hours on 2 cores); the committed "
                  "results and how each was made: benchmarks/results/cpu/README.md")
logger = logging.getLogger("bench_offline")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="full")
    parser.add_argument("--methods", help="default: the preset's")
    parser.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    parser.add_argument("--budget", type=int, default=6, help="SSD fan-out budget")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--temperatures", type=lambda s: [float(x) for x in s.split(",")])
    parser.add_argument("--per-dataset", type=int, help="prompts per dataset")
    parser.add_argument("--max-prompt-chars", type=int,
                        help="only prompts this short (default: the preset's; full: any)")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--ssd-settings", default="{}", help="extra SSD settings as JSON")
    parser.add_argument("--enforce-eager", action="store_true", default=None,
                        help="target (and vLLM's draft) without torch.compile; default: the preset's")
    parser.add_argument("--max-num-batched-tokens", type=int,
                        help="vLLM's token budget per step (start-up profiles one such step); "
                             "default: the preset's (full: vLLM's own)")
    parser.add_argument("--models", default=os.environ.get("VLLM_SSD_MODELS",
                                                           "~/.cache/vllm-ssd-models"))
    parser.add_argument("--out", help="default: results/cpu (full), .scratch/demo (demo)")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--resume", action="store_true",
                        help="keep the configurations a stopped run with the same --out and "
                             "--tag finished (its offline<tag>.partial.json)")
    parser.add_argument("--timings", metavar="TSV",
                        help="append one line per engine: name, seconds, where they went "
                             "(scripts/demo.sh's summary)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="no runs: rebuild the report from the raw rows of these result "
                             "files (later files replace the same configurations)")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():  # the preset fills what was not given
        if getattr(args, key, None) is None:
            setattr(args, key, str(value) if key == "out" else value)
    return args


def configs(args) -> list[dict]:
    models = Path(args.models).expanduser()
    base = dict(
        target=str(models / "qwen2.5-coder-1.5b-instruct"),
        draft=str(models / "qwen2.5-coder-0.5b-instruct"), k=args.k, budget=args.budget,
        batch_sizes=args.batch_sizes, max_tokens=args.max_tokens, enforce_eager=args.enforce_eager,
        max_num_batched_tokens=args.max_num_batched_tokens,
        prompts=prompt_sets.mixed(args.per_dataset, args.max_prompt_chars), ssd_settings=json.loads(args.ssd_settings))
    out = []
    for method in args.methods.split(","):
        temperatures = [t for t in args.temperatures if t > 0 or method not in POSITIVE_T_ONLY]
        for placement in args.placements.get(method, METHOD_PLACEMENTS[method]):
            target_cpus, draft_cpus = PLACEMENTS[placement]
            if temperatures:
                out.append({**base, "method": method, "placement": placement,
                            "temperatures": temperatures,
                            "target_cpus": target_cpus, "draft_cpus": draft_cpus})
    return out


def run(config: dict, log_path: Path, machine: dict, progress: str) -> tuple[list[dict], dict]:
    """One configuration in its own process (its output in ``log_path``, its progress
    lines logged); its rows, labelled with the machine's CPU, and where its time went."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, open(log_path, "w", buffering=1) as log:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(config))
        child = subprocess.Popen([sys.executable, str(HERE / "run_engine.py"), str(spec), str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in child.stdout:
            log.write(line)
            if line.startswith("[run_engine]"):
                logger.info("%s %s (%.0f s)", progress, line.removeprefix("[run_engine]").strip(),
                            time.monotonic() - started)
        if child.wait() != 0:
            raise RuntimeError(f"{progress} failed (exit {child.returncode}); see {log_path}")
        result = json.loads(out.read_text())
    timing = engine_timing(config, time.monotonic() - started, result["phases"])
    logger.info("%s done in %s", progress, timing["text"])
    return [{**entry, "cpu_isa": machine["cpu_isa"], "cpu_model": machine["cpu_model"]}
            for entry in result["rows"]], timing


def engine_timing(config: dict, seconds: float, phases: list) -> dict:
    """One engine's wall time and its phases (engine start, warm-up, each row; the rest is
    the process's start, imports and shutdown)."""
    rest = seconds - sum(s for _, s in phases)
    parts = [f"{name} {s:.0f} s" for name, s in phases] + [f"process start and exit {rest:.0f} s"]
    return {"engine": f"{config['method']} ({config['placement']})", "seconds": seconds,
            "phases": phases, "text": f"{seconds:.0f} s: " + ", ".join(parts)}


def where_the_time_went(timings: list[dict], total_s: float, path: str | None) -> None:
    """Logs each engine's time (and appends them to ``path``, a TSV, if given)."""
    logger.info("where the time went (%.0f s in all):", total_s)
    for timing in timings:
        logger.info("  %s: %s", timing["engine"], timing["text"])
    logger.info("  between engines: %.0f s", total_s - sum(t["seconds"] for t in timings))
    if path:
        with open(path, "a") as handle:
            for timing in timings:
                detail = timing["text"].partition(": ")[2]
                handle.write(f"{timing['engine']}\t{timing['seconds']:.0f}\t{detail}\n")


def merged_raw(paths: list[str]) -> tuple[list[dict], list[dict]]:
    """Raw rows of earlier result files (a configuration in a later file replaces the same
    one of an earlier file on the same CPU kind) and those files' provenance."""
    merged, sources = {}, []
    for path in paths:
        result = json.loads(Path(path).read_text())
        sources.append({"file": Path(path).name, **result.get("provenance", {})})
        for entry in result["raw"]:
            key = (entry["method"], entry["placement"], entry["batch_size"],
                   entry["temperature"], entry.get("cpu_isa"))
            merged[key] = entry
    return list(merged.values()), sources


def run_all(args, record: dict, log_dir: Path, partial: Path, timings: list) -> list[dict]:
    """Every configuration, one engine each (each one's time added to ``timings``); after
    each one its rows are added to ``partial``, so a stopped run loses one configuration at
    most (``--resume`` skips the configurations ``partial`` already holds)."""
    runs = configs(args)
    record["settings"]["configurations"] = [
        {k: v for k, v in config.items() if k != "prompts"} for config in runs]
    record["settings"]["prompts"] = runs[0]["prompts"] if runs else []
    raw = json.loads(partial.read_text())["raw"] if args.resume and partial.exists() else []
    done = {(entry["method"], entry["placement"]) for entry in raw}
    for index, config in enumerate(runs, 1):
        name = f"{config['method']}-{config['placement'].replace(' ', '')}"
        progress = f"[{index}/{len(runs)}] {config['method']} ({config['placement']}):"
        if (config["method"], config["placement"]) in done:
            logger.info("%s kept from %s", progress, partial)
            continue
        logger.info("%s starting its engine (log: %s)", progress, log_dir / f"{name}.log")
        rows, timing = run(config, log_dir / f"{name}.log", record, progress)
        raw.extend(rows)
        record.setdefault("timings", []).append({k: v for k, v in timing.items() if k != "text"})
        timings.append(timing)
        partial.write_text(json.dumps({"provenance": record, "raw": raw}, indent=1))
    return raw


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args()
    out_dir = Path(args.out)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    record = provenance(vars(args))
    started, timings = time.monotonic(), []
    if args.merge:
        raw, record["sources"] = merged_raw(args.merge)
    else:
        try:
            raw = run_all(args, record, log_dir, out_dir / f"offline{tag}.partial.json", timings)
        finally:  # a failed engine still shows where the time went
            where_the_time_went(timings, time.monotonic() - started, args.timings)
    rows = add_comparisons([row_metrics(r) for r in raw])
    (out_dir / f"offline{tag}.json").write_text(json.dumps(
        {"provenance": record, "rows": rows, "raw": raw}, indent=1))
    write_report(rows, out_dir, tag)
    (out_dir / f"offline{tag}.partial.json").unlink(missing_ok=True)
    logger.info("wrote %s (.md, plots)", out_dir / f"offline{tag}.json")
    if args.preset == "demo":
        sys.stdout.write("\n" + side_by_side(rows) + f"\n{FULL_BENCHMARK}\n")
    else:
        sys.stdout.write((out_dir / f"offline{tag}.md").read_text())


if __name__ == "__main__":
    main()
