"""The fused rotary + KV-cache-write Triton kernel, run by Triton's interpreter on the CPU
(the GPU tests run it compiled): it writes what the PyTorch reference writes, the check
that guards it rejects a wrong kernel, and a draft model whose layers take the fused path
gives the logits of the unfused path."""
import os
import subprocess
import sys

CHECK = """
import torch
from vllm_ssd.server.model.rope_cache_cuda import (RopeAndCache, _agrees, _build_kernel,
                                             rope_and_cache_reference)
fused = RopeAndCache(_build_kernel())
for head_dim in (64, 128):
    assert _agrees(fused, rope_and_cache_reference, torch.device("cpu"), torch.float32, head_dim)

def wrong(q, k, v, positions, cos_sin, key_cache, value_cache, slots):
    rope_and_cache_reference(q, v, k, positions, cos_sin, key_cache, value_cache, slots)
assert not _agrees(fused, wrong, torch.device("cpu"), torch.float32, 64)
print("ok")
"""


def test_fused_kernel_matches_the_reference_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


MODEL_CHECK = """
import sys
import numpy as np
import torch
from vllm_ssd.server.device.model_runner import ModelRunner
from vllm_ssd.server.model.rope_cache_cuda import RopeAndCache, _build_kernel

runner = ModelRunner(sys.argv[1], torch.device("cpu"), "float32", num_blocks=64,
                          block_size=16, max_positions=256, dummy=False, quantization="none")
backend, fused = runner.backend, RopeAndCache(_build_kernel())

def rotary_forward(q, k, v, positions, cos_sin, key_cache, value_cache, meta, scale):
    fused(q, k, v, positions, cos_sin, key_cache, value_cache, meta.slot_mapping)
    heads, dim = k.shape[1], k.shape[2]  # re-read what the kernel wrote: attention rewrites it
    k_written = key_cache.view(-1, heads, dim)[meta.slot_mapping]
    v_written = value_cache.view(-1, heads, dim)[meta.slot_mapping]
    return backend.forward(q, k_written, v_written, key_cache, value_cache, meta, scale)
backend.rotary_forward = rotary_forward
ids = np.random.default_rng(0).integers(4, 500, size=64)
tables = 1 + np.arange(32).reshape(4, 8)
logits = {}
for use_fused in (False, True):
    backend.rope_and_cache = fused if use_fused else None
    for row in range(4):
        runner.run(runner.make_batch(ids[:40], np.array([40]), np.array([0]),
                                     tables[row:row + 1], np.array([39])))
    logits[use_fused] = runner.run(runner.make_batch(
        ids[:4], np.ones(4, dtype=np.int64), np.full(4, 40), tables, np.arange(4)))
assert torch.allclose(logits[True], logits[False], atol=1e-4), (logits[True] - logits[False])
print("ok")
"""


def test_a_model_on_the_fused_path_gives_the_unfused_logits(tiny):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", MODEL_CHECK, str(tiny["draft_hd64"])],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
