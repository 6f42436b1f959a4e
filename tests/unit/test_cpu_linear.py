"""W8A8 int8 draft linears on CPU (vLLM's AMX kernel): close to the bf16 GEMMs, safe on
empty batches, applied only where the kernel fits; the setting is CPU-only."""
import numpy as np
import pytest
import torch

from vllm_ssd.server.cpu_linear import Int8Linear, PackedLinear, int8_available
from vllm_ssd.server.model_runner import DraftModelRunner
from vllm_ssd.settings import SSDConfigError
from vllm_ssd.validation import check_quantization

needs_int8 = pytest.mark.skipif(not int8_available(),
                                reason="needs vLLM's CPU build on a CPU with AMX tiles")


@needs_int8
def test_int8_linear_is_close_to_the_bf16_linear():
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(256, 128, generator=generator) * 0.05).bfloat16()  # [N, K]
    bias = torch.randn(256, generator=generator).bfloat16()
    x = torch.randn(5, 128, generator=generator).bfloat16()  # [T, K]
    linear = Int8Linear(weight, bias)
    expected = torch.nn.functional.linear(x.float(), weight.float(), bias.float())
    out = linear(x)
    assert out.shape == (5, 256) and out.dtype == torch.bfloat16
    assert (out.float() - expected).norm() / expected.norm() < 0.02
    assert linear(x[:0]).shape == (0, 256)  # the kernel itself dies (SIGFPE) on T = 0


def _runner(path, dtype: str, quantization: str) -> DraftModelRunner:
    return DraftModelRunner(str(path), torch.device("cpu"), dtype, num_blocks=16, block_size=4,
                            max_positions=64, dummy=False, quantization=quantization)


def _logits(runner: DraftModelRunner) -> torch.Tensor:
    ids = np.random.default_rng(0).integers(4, 500, size=9)
    tables = np.arange(16).reshape(1, 16)
    batch = runner.make_batch(ids, np.array([9]), np.array([0]), tables, np.arange(9))
    return runner.run(batch)  # [9, V]


@needs_int8
def test_int8_draft_model_tracks_the_bf16_model(tiny):
    plain, quantized = _runner(tiny["target"], "bfloat16", "none"), \
        _runner(tiny["target"], "bfloat16", "int8")
    linears = [m for m in quantized.model.modules() if isinstance(m, (Int8Linear, PackedLinear))]
    assert linears and all(isinstance(m, Int8Linear) for m in linears)
    expected, out = _logits(plain), _logits(quantized)
    assert (out - expected).norm() / expected.norm() < 0.1
    assert (out.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.75


def test_int8_leaves_float32_drafts_on_the_bf16_path(tiny):
    runner = _runner(tiny["draft"], "float32", "int8")
    assert not any(isinstance(m, Int8Linear) for m in runner.model.modules())


def test_int8_is_a_cpu_only_setting():
    check_quantization("int8", "cpu")
    check_quantization("none", "cuda:1")
    check_quantization("auto", "cuda:1")
    with pytest.raises(SSDConfigError, match="'draft_quantization'"):
        check_quantization("int8", "cuda:1")
