"""Host latency of the draft's CUDA-graph forward: building a batch, the call that copies the
inputs and replays, ``graph.replay()`` alone, and the wall time of one step (CUDA only).

    python3 benchmarks/gpu/replay_latency.py [--draft benchmarks/gpu/configs/qwen2.5-0.5b]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.provenance import provenance  # noqa: E402


def measure(runner, ids, tables, query_len: int, rows: int, repeats: int = 30) -> dict:
    import torch

    def make_batch():
        return runner.make_batch(ids[:rows * query_len], np.full(rows, query_len),
                                 np.full(rows, 300), tables[:rows], np.arange(rows * query_len))
    graph = runner.graphs.graphs[(query_len, rows)].graph
    for _ in range(5):
        runner.run(make_batch())
    samples = {"make_batch_ms": [], "run_call_ms": [], "replay_call_ms": [], "wall_ms": []}
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        batch = make_batch()
        made = time.perf_counter()
        runner.run(batch)
        called = time.perf_counter()
        torch.cuda.synchronize()
        done = time.perf_counter()
        graph.replay()
        replayed = time.perf_counter()
        torch.cuda.synchronize()
        for name, value in (("make_batch_ms", made - start), ("run_call_ms", called - made),
                            ("replay_call_ms", replayed - done), ("wall_ms", done - start)):
            samples[name].append(value)
    return {name: round(1e3 * float(np.median(v)), 3) for name, v in samples.items()}


def main() -> None:
    import torch

    from vllm_ssd.server.device.model_runner import ModelRunner

    parser = argparse.ArgumentParser()
    parser.add_argument("--draft", default="benchmarks/gpu/configs/qwen2.5-0.5b")
    args = parser.parse_args()
    runner = ModelRunner(args.draft, torch.device("cuda:0"), "auto", num_blocks=4096,
                              block_size=16, max_positions=4096, dummy=True)
    runner.capture_graphs({1: 64, 5: 16}, max_blocks=64)
    tables = np.arange(64 * 64).reshape(64, 64)
    ids = np.random.default_rng(0).integers(100, 50000, size=400)
    out = {f"q{q}_rows{rows}": measure(runner, ids, tables, q, rows)
           for q, rows in ((1, 1), (1, 8), (5, 1), (5, 16))}
    out["provenance"] = provenance(vars(args), "cuda:0")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
