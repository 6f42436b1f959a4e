"""The fused rotary + KV-cache-write Triton kernel, run by Triton's interpreter on the CPU
(the GPU tests run it compiled): it writes what the PyTorch reference writes, and the
check that guards it rejects a wrong kernel."""
import os
import subprocess
import sys

CHECK = """
import torch
from vllm_ssd.server.rope_cache_cuda import (RopeAndCache, _agrees, _build_kernel,
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
