"""Profile of the draft server's model: one forward by batch rows (branch decode) and by
query length (glue pass), next to the cache build that one target step must hide.

    python benchmarks/profile_draft.py [--draft DIR] [--cpu N] [--quantization none]  # CPU: one core
    python benchmarks/profile_draft.py --cpu-isa avx2 --dtype float32  # a lower tier's path
    python benchmarks/profile_draft.py --device cuda --dummy \
        --draft benchmarks/gpu/configs/qwen2.5-0.5b
"""
from __future__ import annotations

import argparse
import json
import logging
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


def parse_args() -> argparse.Namespace:
    models = Path(os.environ.get("VLLM_SSD_MODELS", "~/.cache/vllm-ssd-models")).expanduser()
    parser = argparse.ArgumentParser()
    parser.add_argument("--draft", default=str(models / "qwen2.5-coder-0.5b-instruct"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1)
    parser.add_argument("--dummy", action="store_true", help="random weights (GPU timing)")
    parser.add_argument("--quantization", default="auto", choices=("auto", "none", "int8"),
                        help="the draft_quantization setting")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="the draft_dtype setting")
    parser.add_argument("--cpu-isa", default="auto", choices=("auto", "amx", "avx512", "avx2"),
                        help="the draft_cpu_isa setting (a lower tier also caps oneDNN/PyTorch)")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--kernels", action="store_true",
                        help="CUDA: per-kernel times of one branch-decode step (eager and graph) "
                        "and the graph step's time by the attention's max context length")
    parser.add_argument("--ablations", action="store_true",
                        help="CUDA: branch-step times with FA3 split counts 0/1/4 and the fused "
                        "rotary + KV write on/off, at contexts 300 and 1000")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    if args.device == "cpu" and args.cpu_isa != "auto":
        _cap_this_process(args.cpu_isa)
    import torch

    from vllm_ssd.server.device.cuda_graphs import graph_rows
    from vllm_ssd.server.device.model_runner import ModelRunner

    device = torch.device(args.device)
    if device.type == "cpu":
        os.sched_setaffinity(0, {args.cpu})
        torch.set_num_threads(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runner = ModelRunner(args.draft, device, args.dtype, num_blocks=4096, block_size=16,
                              max_positions=4096, dummy=args.dummy,
                              quantization=args.quantization, cpu_isa=args.cpu_isa)
    rows_list = (1, 2, 4, 8, 16, 64) if device.type == "cuda" else (1, 2, 4, 6, 8, 16)
    if device.type == "cuda":
        # the engine's graphs: decode steps and every glue length 2 .. K + 1 (K = 4)
        runner.capture_graphs({**graph_rows(8, 8, 4), 1: max(rows_list)}, max_blocks=64)
    context = 300  # tokens of prompt + output already in the KV cache
    tables = np.arange(64 * 64).reshape(64, 64)
    ids = np.random.default_rng(0).integers(100, 50000, size=context)
    runner.run(runner.make_batch(ids, np.array([context]), np.array([0]), tables[:1],
                                 np.array([context - 1])))
    out = {"provenance": provenance(vars(args), str(device)),
           "graphs": runner.graphs is not None, "dtype": str(runner.dtype),
           "cpu_kernels": runner.cpu_plan.describe() if runner.cpu_plan else None,
           "context_tokens": context, "decode_ms_by_rows": {}, "glue_ms_by_query_len": {}}
    time_passes(runner, out, rows_list, ids, tables, sync)
    if args.kernels and device.type == "cuda":
        batch = runner.make_batch(ids[:1], np.ones(1, dtype=np.int64), np.full(1, context),
                                  tables[:1], np.arange(1))
        out["kernels"] = kernel_profile(runner, batch)
        out["decode_ms_by_max_context"] = by_max_context(runner, batch, sync)
    if args.ablations and device.type == "cuda":
        out["ablations"] = ablations(runner, ids, tables, sync)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


def time_passes(runner, out: dict, rows_list, ids, tables, sync) -> None:
    """Decode steps by rows and one row's glue pass by query length 1 .. K + 1 (K = 4), at
    the context already in the KV cache; into ``out``'s two tables."""
    context = out["context_tokens"]
    for rows in rows_list:
        batch = runner.make_batch(ids[:rows], np.ones(rows, dtype=np.int64),
                                  np.full(rows, context), tables[:rows], np.arange(rows))
        out["decode_ms_by_rows"][rows] = timed(lambda: runner.run(batch), sync)
    for query in (1, 2, 3, 4, 5):
        batch = runner.make_batch(ids[:query], np.array([query]), np.array([context]),
                                  tables[:1], np.arange(query))
        out["glue_ms_by_query_len"][query] = timed(lambda: runner.run(batch), sync)


def _cap_this_process(cap: str) -> None:
    """oneDNN and PyTorch read their ISA caps at first use: set them before torch loads."""
    from vllm_ssd.cpu_isa import cap_environment, detect_cpu_isa

    os.environ.update(cap_environment(detect_cpu_isa(), cap))


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


def ablations(runner, ids, tables, sync) -> dict:
    """Graph step times (ms) by (FA3 num_splits, fused rotary + KV write) at 1 and 64 rows,
    contexts 300 and 1000 tokens."""
    from vllm_ssd.server.kv.attention_cuda import FlashPagedAttention

    backend, out = runner.backend, {}
    fused, splits = backend.rope_and_cache, FlashPagedAttention.num_splits
    long_ids = np.resize(ids, 1000)
    runner.run(runner.make_batch(long_ids, np.array([1000]), np.array([0]), tables[:1],
                                 np.array([999])))
    for num_splits in (0, 1, 4):
        for use_fused in (True, False):
            FlashPagedAttention.num_splits = num_splits
            backend.rope_and_cache = fused if use_fused else None
            runner.capture_graphs({1: 64}, max_blocks=64)
            for rows in (1, 64):
                for context in (300, 1000):
                    batch = runner.make_batch(ids[:rows], np.ones(rows, dtype=np.int64),
                                              np.full(rows, context), tables[:rows],
                                              np.arange(rows))
                    key = f"splits={num_splits} fused_rope={use_fused} rows={rows} ctx={context}"
                    out[key] = timed(lambda: runner.run(batch), sync)
    FlashPagedAttention.num_splits, backend.rope_and_cache = splits, fused
    runner.capture_graphs({1: 64, 5: 8}, max_blocks=64)
    return out


def by_max_context(runner, batch, sync) -> dict:
    """Graph replay time of a one-row decode step captured at several max context lengths
    (FlashAttention's split heuristics read it)."""
    from vllm_ssd.server.device.cuda_graphs import CudaGraphs

    graphs, out = runner.graphs, {}
    for max_context in (512, 2048, runner.max_positions):
        runner.graphs = CudaGraphs(runner.model, runner.kv_cache, {1: 1}, 64, max_context)
        runner.graphs.capture(runner.backend)
        out[max_context] = timed(lambda: runner.run(batch), sync)
    runner.graphs = graphs
    return out


if __name__ == "__main__":
    main()
