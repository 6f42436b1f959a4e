"""GPU benchmark (timing only): real architecture shapes with dummy weights.

Dummy weights make acceptance and cache hits meaningless, so both are *simulated*:
vLLM's synthetic rejection sampling accepts position i with the per-position rates
measured on the real Qwen pair, and vllm_ssd's ``sim_hit_rate`` serves a cached branch
with the hit rate measured on that pair. Every number is labelled timing-only.
Target on cuda:0, draft server on cuda:1 (or cuda:0 when only one GPU is visible).

Methods: ``plain``; ``vllm_sd`` (vLLM's ``draft_model``); ``ssd`` (vllm_ssd's default, the
plan chosen by measurement); ``ssd_ssd`` / ``ssd_sd`` (``mode`` forced to ``ssd`` / ``sd``);
``ceiling`` (a zero-cost ``custom_class`` proposer, ``ceiling_proposer.py``). Every SSD row
prints its per-step decomposition (``step_decomposition``).

    python benchmarks/gpu/bench_gpu.py --pairs qwen7b --out results.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from benchmarks.provenance import provenance  # noqa: E402

os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SSD_MODES = {"ssd": "auto", "ssd_ssd": "ssd", "ssd_sd": "sd"}  # method -> setting ``mode``
PAIRS = {"qwen7b": ("qwen2.5-7b", "qwen2.5-0.5b"), "llama8b": ("llama-3.1-8b", "llama-3.2-1b")}


def run_case(case: dict) -> dict:
    from vllm import LLM, SamplingParams

    import vllm_ssd
    vllm_ssd.register()  # the package is on PYTHONPATH, not installed: no entry point
    target, draft = (str(HERE / "configs" / name) for name in PAIRS[case["pair"]])
    kwargs = dict(model=target, load_format="dummy", skip_tokenizer_init=True, seed=0,
                  max_model_len=2048, gpu_memory_utilization=case["target_memory"],
                  disable_log_stats=False,
                  max_num_seqs=max(case["batch_sizes"]))
    spec = dict(num_speculative_tokens=case["k"], rejection_sample_method="synthetic",
                synthetic_acceptance_rates=case["rates"])
    if case["method"] == "plain_sync":  # what custom_class imposes on vLLM, without drafts
        kwargs["async_scheduling"] = False
    if case["method"] == "vllm_sd":
        kwargs["speculative_config"] = dict(method="draft_model", model=draft, **spec)
    elif case["method"] == "ceiling":
        kwargs["speculative_config"] = dict(
            method="custom_class", model="benchmarks.gpu.ceiling_proposer.CeilingProposer",
            **spec)
    elif case["method"] in SSD_MODES:
        kwargs["speculative_config"] = dict(
            method="ssd", model=draft, mode=SSD_MODES[case["method"]],
            draft_device=case["draft_device"], fanout_budget=case["budget"],
            sim_hit_rate=case["hit_rate"], log_interval_s=0,
            **case.get("ssd_settings", {}), **spec)
    start = time.time()
    llm = LLM(**kwargs)
    rows = [dict(case=case, init_s=round(time.time() - start, 1))]
    for batch_size in case["batch_sizes"]:
        rows.append(time_batch(llm, batch_size, case["output_len"], SamplingParams))
    return rows


def time_batch(llm, batch_size: int, output_len: int, sampling_params_cls) -> dict:
    rng = random.Random(batch_size)
    prompts = [{"prompt_token_ids": [rng.randrange(1000, 100000) for _ in range(128)]}
               for _ in range(batch_size)]
    params = sampling_params_cls(temperature=0.0, max_tokens=output_len, min_tokens=output_len,
                                 ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up at this batch size
    before = snapshot(llm)
    start = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    after = snapshot(llm)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    return dict(batch_size=batch_size, seconds=round(seconds, 4),
                tok_per_s=round(batch_size * output_len / seconds, 1),
                ms_per_step_per_seq=round(1000 * seconds / output_len, 3), delta=delta,
                per_step=step_decomposition(delta, batch_size * output_len))


def step_decomposition(delta: dict, tokens: int) -> dict:
    """Per draft-server step of an SSD row: target step, proposer round trip, cache build
    (ms), tokens per row per step (the run's ``tokens`` over its row-steps, rows with and
    without drafts), the tokens per verified draft row, and the share of steps of each plan."""
    def ratio(a: str, b: str, scale: float = 1.0) -> float | None:
        return round(scale * delta[a] / delta[b], 3) if delta.get(b) else None
    steps = sum(delta.get(f"ssd.{key}", 0.0) for key in
                ("steps_without_speculation", "steps_sd", "steps_ssd"))
    accepted = ratio("ssd.accepted_tokens", "ssd.outcomes")
    return {"target_step_ms": ratio("ssd.target_step_seconds", "ssd.target_steps", 1e3),
            "round_trip_ms": ratio("ssd.round_trip_seconds", "ssd.round_trips", 1e3),
            "hit_round_trip_ms": ratio("ssd.round_trip_all_hit_seconds",
                                       "ssd.round_trips_all_hit", 1e3),
            "build_ms": ratio("ssd.build_seconds", "ssd.build_rounds", 1e3),
            "tokens_per_row_per_step": round(tokens / delta["ssd.rows"], 3)
            if delta.get("ssd.rows") else None,
            "tokens_per_drafted_row": None if accepted is None else round(accepted + 1, 3),
            "plan_share": {plan: round(delta.get(f"ssd.{key}", 0.0) / steps, 3)
                           for plan, key in (("off", "steps_without_speculation"),
                                             ("sd", "steps_sd"), ("ssd", "steps_ssd"))}
            if steps else None}


def snapshot(llm) -> dict:
    out = {}
    for metric in llm.get_metrics():
        if hasattr(metric, "value") and ("spec_decode" in metric.name):
            out[metric.name] = metric.value
    try:
        from vllm_ssd import get_ssd_metrics
        out.update({f"ssd.{k}": v for k, v in get_ssd_metrics(llm).items()})
    except ValueError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", default="qwen7b")
    parser.add_argument("--methods", default="plain,vllm_sd,ceiling,ssd_sd,ssd_ssd,ssd")
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--rates", default="0.92,0.85,0.78,0.72",
                        help="unconditional per-position acceptance (real Qwen pair, CPU run)")
    parser.add_argument("--hit-rate", type=float, default=0.85)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--ssd-settings", default="{}", help="extra SSD settings as JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return
    import torch
    device = "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0"
    for pair in args.pairs.split(","):
        for method in args.methods.split(","):
            case = dict(pair=pair, method=method, k=args.k, budget=args.budget,
                        rates=[float(r) for r in args.rates.split(",")][:args.k],
                        hit_rate=args.hit_rate, output_len=args.output_len,
                        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
                        draft_device=device, gpus=torch.cuda.device_count(),
                        # one GPU: leave room for the draft server beside the target
                        target_memory=0.85 if torch.cuda.device_count() > 1 else 0.6,
                        ssd_settings=json.loads(args.ssd_settings),
                        gpu=torch.cuda.get_device_name(0))
            case["provenance"] = provenance(vars(args), "cuda:0")
            proc = subprocess.run([sys.executable, __file__, "--out", args.out, "--case",
                                   json.dumps(case)], capture_output=True, text=True)
            log = Path(f"{args.out}.{pair}-{method}.log")  # vLLM's and the draft server's log
            log.write_text(proc.stderr)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            failed = [dict(case=case, error=proc.stderr[-3000:])]
            record = json.loads(lines[-1][7:]) if lines else failed
            with open(args.out, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            for row in record[1:] if lines else record:
                print(json.dumps({"method": method, **{k: v for k, v in row.items()
                                                       if k not in ("delta", "case")}})[:600],
                      flush=True)


if __name__ == "__main__":
    main()
