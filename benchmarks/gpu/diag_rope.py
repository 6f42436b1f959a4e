"""Diagnostic: per-row logit differences of eager decode steps with the fused rotary + KV
write on and off and FA3's split count 0 or 1 (tiny hd64 draft, bf16).

    python3 benchmarks/gpu/diag_rope.py [FIRST_BLOCK]
"""
import sys

import numpy as np
import torch

sys.path.insert(0, ".")
from tests.conftest import TINY_ROOT  # noqa: E402
from tests import tiny_models  # noqa: E402
from vllm_ssd.server.device.model_runner import ModelRunner  # noqa: E402


def main():
    import hashlib
    from pathlib import Path
    recipe = hashlib.sha256(Path(tiny_models.__file__).read_bytes()).hexdigest()[:10]
    tiny = tiny_models.build_all(TINY_ROOT / recipe)
    runner = ModelRunner(str(tiny["draft_hd64"]), torch.device("cuda"), "bfloat16",
                              num_blocks=128, block_size=16, max_positions=256, dummy=False)
    from vllm_ssd.server.kv.attention_cuda import FlashPagedAttention

    backend, fused = runner.backend, runner.backend.rope_and_cache
    ids = np.random.default_rng(0).integers(4, 500, size=64)
    first = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    tables = np.arange(first, first + 32).reshape(4, 8)
    results = {}
    for use_fused in (False, True):
        for num_splits in (0, 1):
            backend.rope_and_cache = fused if use_fused else None
            FlashPagedAttention.num_splits = num_splits
            for row in range(4):
                runner.run(runner.make_batch(ids[:40], np.array([40]), np.array([0]),
                                             tables[row:row + 1], np.array([39])))
            batch = runner.make_batch(ids[:4], np.ones(4, dtype=np.int64), np.full(4, 40),
                                      tables, np.arange(4))
            results[(use_fused, num_splits)] = runner.run(batch).float()
    base = results[(False, 0)]
    for key, logits in results.items():
        print(f"first_block={first} fused={key[0]} num_splits={key[1]} max|diff| per row:",
              [round(float(d), 4) for d in (logits - base).abs().amax(-1)])


if __name__ == "__main__":
    main()
