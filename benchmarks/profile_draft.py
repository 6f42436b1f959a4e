"""Profile of the draft server's model: one forward by batch rows (branch decode) and by
query length (glue pass), next to the cache build that one target step must hide.

    python benchmarks/profile_draft.py [--draft DIR] [--cpu N] [--quantization none]  # CPU: one core
    python benchmarks/profile_draft.py --device cuda --dummy \
        --draft benchmarks/gpu/configs/qwen2.5-0.5b
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import provenance  # noqa: E402


def timed(run, sync, repeats: int = 20) -> float:
    run()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        samples.append(time.perf_counter() - start)
    return round(1000 * float(np.median(samples)), 3)


def main() -> None:
    models = Path(os.environ.get("VLLM_SSD_MODELS", "~/.cache/vllm-ssd-models")).expanduser()
    parser = argparse.ArgumentParser()
    parser.add_argument("--draft", default=str(models / "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1)
    parser.add_argument("--dummy", action="store_true", help="random weights (GPU timing)")
    parser.add_argument("--quantization", default="auto", choices=("auto", "none", "int8"),
                        help="the draft_quantization setting (int8 needs a CPU with AMX)")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--kernels", action="store_true",
                        help="CUDA: per-kernel times of one branch-decode step (eager and graph) "
                        "and the graph step's time by the attention's max context length")
    args = parser.parse_args()
    import torch

    from vllm_ssd.server.model_runner import DraftModelRunner

    device = torch.device(args.device)
    if device.type == "cpu":
        os.sched_setaffinity(0, {args.cpu})
        torch.set_num_threads(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runner = DraftModelRunner(args.draft, device, "auto", num_blocks=4096, block_size=16,
                              max_positions=4096, dummy=args.dummy,
                              quantization=args.quantization)
    rows_list = (1, 2, 4, 8, 16, 64) if device.type == "cuda" else (1, 2, 4, 6, 8, 16)
    if device.type == "cuda":
        runner.capture_graphs({1: max(rows_list), 5: 8}, max_blocks=64)
    context = 300  # tokens of prompt + output already in the KV cache
    tables = np.arange(64 * 64).reshape(64, 64)
    ids = np.random.default_rng(0).integers(100, 50000, size=context)
    runner.run(runner.make_batch(ids, np.array([context]), np.array([0]), tables[:1],
                                 np.array([context - 1])))
    out = {"provenance": provenance(vars(args), str(device)),
           "graphs": runner.graphs is not None, "context_tokens": context,
           "decode_ms_by_rows": {}, "glue_ms_by_query_len": {}}
    for rows in rows_list:
        batch = runner.make_batch(ids[:rows], np.ones(rows, dtype=np.int64),
                                  np.full(rows, context), tables[:rows], np.arange(rows))
        out["decode_ms_by_rows"][rows] = timed(lambda: runner.run(batch), sync)
    for query in (2, 3, 5):
        batch = runner.make_batch(ids[:query], np.array([query]), np.array([context]),
                                  tables[:1], np.arange(query))
        out["glue_ms_by_query_len"][query] = timed(lambda: runner.run(batch), sync)
    if args.kernels and device.type == "cuda":
        batch = runner.make_batch(ids[:1], np.ones(1, dtype=np.int64), np.full(1, context),
                                  tables[:1], np.arange(1))
        out["kernels"] = kernel_profile(runner, batch)
        out["decode_ms_by_max_context"] = by_max_context(runner, batch, sync)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def kernel_profile(runner, batch, steps: int = 10) -> dict:
    """Kernel names, counts and total device microseconds per step, eager and graph."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    result = {}
    graphs = runner.graphs
    for name, use_graphs in (("eager", False), ("graph", True)):
        runner.graphs = graphs if use_graphs else None
        runner.run(batch)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                runner.run(batch)
            torch.cuda.synchronize()
        rows = [(e.key, e.count / steps, e.self_device_time_total / steps)
                for e in prof.key_averages() if e.self_device_time_total > 0]
        rows.sort(key=lambda r: -r[2])
        result[name] = {"kernels_per_step": round(sum(r[1] for r in rows), 1),
                        "device_us_per_step": round(sum(r[2] for r in rows), 1),
                        "top": [[k[:90], round(c, 1), round(t, 1)] for k, c, t in rows[:25]]}
    runner.graphs = graphs
    return result


def by_max_context(runner, batch, sync) -> dict:
    """Graph replay time of a one-row decode step captured at several max context lengths
    (FlashAttention's split heuristics read it)."""
    from vllm_ssd.server.cuda_graphs import CudaGraphRunner

    graphs, out = runner.graphs, {}
    for max_context in (512, 2048, runner.max_positions):
        runner.graphs = CudaGraphRunner(runner.model, runner.kv_cache, {1: 1}, 64, max_context)
        runner.graphs.capture(runner.backend)
        out[max_context] = timed(lambda: runner.run(batch), sync)
    runner.graphs = graphs
    return out


if __name__ == "__main__":
    main()
