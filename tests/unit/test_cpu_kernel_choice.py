"""The CPU draft's dtype and GEMM kernel: candidates by tier, the fastest wins, int8 needs a
margin, kernels that cannot run drop out, an impossible explicit int8 stops start-up."""
import pytest
import torch

from vllm_ssd.cpu_isa import CpuIsa
from vllm_ssd.server.model.cpu_kernel_choice import (Candidate, candidate_dtypes,
                                                     candidates, choose_cpu_kernels)
from vllm_ssd.settings import SSDConfigError

AMX, ZEN4, AVX2 = (CpuIsa("amx", True, "x", vnni=True), CpuIsa("avx512", True, "z", vnni=True),
                   CpuIsa("avx2", False, "e"))
SKYLAKE, AVX2_VNNI = CpuIsa("avx512", False, "s"), CpuIsa("avx2", False, "a", vnni=True)
BF16, FP32 = torch.bfloat16, torch.float32


def labels(found):
    return {c.label() for c in found}


def test_a_bf16_checkpoint_also_tries_float32_where_bf16_is_slow():
    assert candidate_dtypes("bfloat16", "auto", AMX) == [BF16]
    assert candidate_dtypes("bfloat16", "auto", AVX2) == [BF16, FP32]
    assert candidate_dtypes("float32", "auto", AVX2) == [FP32]
    assert candidate_dtypes("bfloat16", "float32", AMX) == [FP32]
    assert candidate_dtypes("float32", "float16", AMX) == [BF16]  # no float16 on CPU


def test_candidates_by_tier_and_quantization():
    assert labels(candidates([BF16], "auto", AMX)) == {
        "onednn/bfloat16", "torch/bfloat16", "amx_int8/bfloat16", "onednn_int8/bfloat16"}
    assert labels(candidates([BF16], "auto", ZEN4)) == {
        "onednn/bfloat16", "torch/bfloat16", "onednn_int8/bfloat16"}
    # AVX2: no oneDNN bf16 matmul, no AMX kernel
    assert labels(candidates([BF16, FP32], "none", AVX2)) == {
        "torch/bfloat16", "onednn/float32", "torch/float32"}
    assert labels(candidates([BF16], "int8", AMX)) == {"amx_int8/bfloat16",
                                                       "onednn_int8/bfloat16"}


def test_int8_is_offered_only_where_its_sums_are_32_bit():
    """Without VNNI oneDNN's u8 x s8 products go into saturating 16-bit sums."""
    assert labels(candidates([FP32], "int8", AVX2)) == set()
    assert labels(candidates([FP32], "int8", SKYLAKE)) == set()
    assert labels(candidates([FP32], "int8", AVX2_VNNI)) == {"onednn_int8/float32"}
    assert labels(candidates([FP32], "int8", ZEN4)) == {"onednn_int8/float32"}
    assert not AMX.capped("avx2").exact_int8 and AMX.capped("avx512").exact_int8
    with pytest.raises(SSDConfigError, match="'draft_quantization'.*VNNI no"):
        choose_cpu_kernels(AVX2, "float32", "auto", "int8", (512, 128), fake_timer({}))


def fake_timer(ms_by_label, failing=()):
    def timer(candidate: Candidate, out_features: int, in_features: int) -> float:
        assert (out_features, in_features) == (512, 128)
        if candidate.label() in failing:
            raise RuntimeError("could not create a primitive descriptor for the matmul primitive")
        return ms_by_label[candidate.label()]
    return timer


def test_the_fastest_float_kernel_wins():
    timer = fake_timer({"torch/bfloat16": 9.0, "onednn/float32": 4.0, "torch/float32": 5.0})
    plan = choose_cpu_kernels(AVX2, "bfloat16", "auto", "none", (512, 128), timer)
    assert (plan.dtype, plan.linear) == (FP32, "onednn")
    assert "isa avx2" in plan.describe() and "onednn/float32 4.00" in plan.describe()


@pytest.mark.parametrize("int8_ms,expected", [(1.0, "amx_int8"), (1.9, "onednn")])
def test_auto_takes_int8_only_by_a_clear_margin(int8_ms, expected):
    timer = fake_timer({"onednn/bfloat16": 2.0, "torch/bfloat16": 3.0,
                        "amx_int8/bfloat16": int8_ms, "onednn_int8/bfloat16": 5.0})
    plan = choose_cpu_kernels(AMX, "bfloat16", "auto", "auto", (512, 128), timer)
    assert plan.linear == expected and plan.dtype == BF16


def test_explicit_int8_takes_int8_even_when_slower():
    timer = fake_timer({"onednn_int8/float32": 20.0})
    plan = choose_cpu_kernels(AVX2_VNNI, "float32", "auto", "int8", (512, 128), timer)
    assert (plan.dtype, plan.linear) == (FP32, "onednn_int8")


def test_kernels_that_cannot_run_drop_out():
    timer = fake_timer({"torch/bfloat16": 3.0, "onednn_int8/bfloat16": 9.0},
                       failing={"onednn/bfloat16", "amx_int8/bfloat16"})
    plan = choose_cpu_kernels(AMX, "bfloat16", "auto", "auto", (512, 128), timer)
    assert plan.linear == "torch" and set(plan.probe_ms) == {"torch/bfloat16",
                                                             "onednn_int8/bfloat16"}


def test_explicit_int8_without_an_int8_kernel_stops_start_up():
    timer = fake_timer({}, failing={"amx_int8/bfloat16", "onednn_int8/bfloat16"})
    with pytest.raises(SSDConfigError, match="'draft_quantization' = 'int8'.*amx"):
        choose_cpu_kernels(AMX, "bfloat16", "auto", "int8", (512, 128), timer)


def test_with_every_kernel_failing_pytorch_still_runs():
    timer = fake_timer({}, failing={"onednn/float32", "torch/float32"})
    plan = choose_cpu_kernels(AVX2, "float32", "auto", "none", (512, 128), timer)
    assert (plan.dtype, plan.linear) == (FP32, "torch")
