"""Profile of the CPU draft: one forward of the draft server's model on its own core, by
batch rows (branch decode) and query length (glue pass), next to the cache build that one
target step must hide.   python benchmarks/profile_draft.py [DRAFT_DIR] [CPU]"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def timed(run, repeats: int = 5) -> float:
    run()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return 1000 * float(np.median(samples))


def main() -> None:
    models = Path(os.environ.get("VLLM_SSD_MODELS", "~/.cache/vllm-ssd-models")).expanduser()
    draft = sys.argv[1] if len(sys.argv) > 1 else str(models / "qwen2.5-coder-0.5b-instruct")
    cpu = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1) - 1
    os.sched_setaffinity(0, {cpu})
    import torch

    torch.set_num_threads(1)
    from vllm_ssd.server.model_runner import DraftModelRunner

    runner = DraftModelRunner(draft, torch.device("cpu"), "auto", num_blocks=2048, block_size=16,
                              max_positions=4096, dummy=False)
    context = 300  # tokens of prompt + output already in the KV cache
    tables = np.arange(64 * 32).reshape(64, 32)
    ids = np.random.default_rng(0).integers(100, 50000, size=context)
    runner.run(runner.make_batch(ids, np.array([context]), np.array([0]), tables[:1],
                                 np.array([context - 1])))
    out = {"draft": draft, "cpu": cpu, "context_tokens": context, "decode_ms_by_rows": {},
           "glue_ms_by_query_len": {}}
    for rows in (1, 2, 4, 6, 8, 16):
        batch = runner.make_batch(ids[:rows], np.ones(rows, dtype=np.int64),
                                  np.full(rows, context), tables[:rows], np.arange(rows))
        out["decode_ms_by_rows"][rows] = round(timed(lambda: runner.run(batch)), 1)
    for query in (2, 3, 5):
        batch = runner.make_batch(ids[:query], np.array([query]), np.array([context]),
                                  tables[:1], np.arange(query))
        out["glue_ms_by_query_len"][query] = round(timed(lambda: runner.run(batch)), 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
