"""What verifying K + 1 tokens costs against decoding one, in the target's linear layers on
this CPU: one Qwen2.5-1.5B MLP projection (1536 x 8960) on one thread, for 1, 5 and 16 rows,
with the GEMM vLLM's CPU backend picks for each dtype (oneDNN where it builds a matmul for
the dtype, else ``torch.nn.functional.linear``: on CPUs without bfloat16 hardware oneDNN has
no bfloat16 matmul).

    python benchmarks/cpu_gemm_rows.py --out benchmarks/results/cpu/gemm-rows-ISA.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import provenance  # noqa: E402

logger = logging.getLogger("cpu_gemm_rows")
SHAPE = (8960, 1536)  # Qwen2.5-1.5B gate/up projection: (out, in)
ROWS = (1, 5, 16)


def milliseconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.perf_counter() - start) / repeats


def vllm_gemm(weight):
    """(name, fn(x)) of the GEMM vLLM's CPU dispatch would take for this weight."""
    import torch
    from vllm import _custom_ops as ops

    try:
        handler = ops.create_onednn_mm(weight.t(), 32)
        return "onednn", lambda x: ops.onednn_mm(handler, x, None)
    except RuntimeError:
        return "torch linear", lambda x: torch.nn.functional.linear(x, weight)


def measure(repeats: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(*SHAPE, dtype=dtype)
        name, gemm = vllm_gemm(weight)
        inputs = {m: torch.randn(m, SHAPE[1], dtype=dtype) for m in ROWS}
        times = {m: milliseconds(lambda x=x: gemm(x), repeats) for m, x in inputs.items()}
        rows.append({"dtype": str(dtype).removeprefix("torch."), "gemm": name,
                     "ms_by_rows": times,
                     "cost_vs_one_row": {m: round(t / times[1], 2) for m, t in times.items()}})
        logger.info("%s (%s): %s ms for %s rows", rows[-1]["dtype"], name,
                    [round(t, 2) for t in times.values()], list(ROWS))
    return rows


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args()
    result = {"provenance": provenance(vars(args)), "shape": SHAPE, "threads": 1,
              "rows": measure(args.repeats)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
