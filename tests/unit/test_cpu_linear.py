"""Every CPU linear kind computes the layer (on this CPU where its tier allows it; where it
does not, the choice never offers it), and a draft forced onto a lower tier's path runs
the same model: on AVX2 a bfloat16 checkpoint becomes a float32 draft."""
import numpy as np
import pytest
import torch

from vllm_ssd.cpu_isa import TIERS, detect_cpu_isa
from vllm_ssd.server.model.cpu_kernel_choice import candidates
from vllm_ssd.server.model.cpu_linear import (AmxInt8Linear, OneDnnInt8Linear, OneDnnLinear,
                                        make_linear)
from vllm_ssd.server.model.kernels import FUSED_OPS, Kernels, agreeing_ops, load_kernels
from vllm_ssd.server.device.model_runner import ModelRunner
from vllm_ssd.settings import SSDConfigError

THIS_CPU = detect_cpu_isa()
KINDS = [("torch", torch.float32), ("torch", torch.bfloat16), ("onednn", torch.float32),
         ("onednn", torch.bfloat16), ("onednn_int8", torch.float32),
         ("onednn_int8", torch.bfloat16), ("amx_int8", torch.bfloat16)]


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_each_linear_kind_computes_the_layer_or_is_never_offered(kind, dtype):
    offered = {(c.linear, c.dtype) for c in candidates([dtype], "auto", THIS_CPU)}
    if (kind, dtype) not in offered:
        reasons = {"amx_int8": THIS_CPU.tier != "amx", "onednn_int8": not THIS_CPU.exact_int8,
                   "onednn": dtype == torch.bfloat16 and not THIS_CPU.fast_bf16}
        assert reasons.get(kind)
        return
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 128, generator=generator) * 0.05  # [N, K]
    bias = torch.randn(256, generator=generator)
    x = torch.randn(5, 128, generator=generator).to(dtype)  # [T, K]
    linear = make_linear(kind, weight, bias, dtype)
    expected = torch.nn.functional.linear(x.float(), weight, bias)
    out = linear(x)
    assert out.shape == (5, 256) and out.dtype == dtype
    tolerance = 0.05 if "int8" in kind else 0.01
    assert (out.float() - expected).norm() / expected.norm() < tolerance
    assert linear(x[:0]).shape == (0, 256)  # the AMX kernel itself dies (SIGFPE) on T = 0


def test_vllm_fused_ops_run_here_and_a_wrong_op_is_refused():
    cpu = torch.device("cpu")
    assert load_kernels(cpu, torch.float32).fused == frozenset(FUSED_OPS)  # every CPU build
    bf16_fused = agreeing_ops(torch.ops._C, cpu, torch.bfloat16)
    assert load_kernels(cpu, torch.bfloat16).fused == bf16_fused
    for dtype in (torch.float32, torch.bfloat16):
        assert agreeing_ops(_PyTorchAsOps(), cpu, dtype) == frozenset(FUSED_OPS)
    broken = agreeing_ops(_PyTorchAsOps(broken=True), cpu, torch.float32)
    assert broken == frozenset(FUSED_OPS) - {"rms_norm"}
    kernels = Kernels(_PyTorchAsOps(broken=True), broken)  # the wrong op is not used
    x = torch.randn(2, 128)
    assert torch.allclose(kernels.rms_norm(x, torch.ones(128), 1e-6),
                          Kernels().rms_norm(x, torch.ones(128), 1e-6))
    assert load_kernels(torch.device("meta")).ops is None


class _PyTorchAsOps:
    """The fused ops' calling convention over PyTorch (``broken``: a wrong RMSNorm)."""

    def __init__(self, broken: bool = False):
        self.broken, self.torch_ops = broken, Kernels()

    def rms_norm(self, out, x, weight, eps):
        out.copy_(x if self.broken else self.torch_ops.rms_norm(x, weight, eps))

    def fused_add_rms_norm(self, x, residual, weight, eps):
        normed, total = self.torch_ops.add_rms_norm(x.clone(), residual.clone(), weight, eps)
        x.copy_(normed)
        residual.copy_(total)

    def silu_and_mul(self, out, gate_up):
        out.copy_(self.torch_ops.silu_and_mul(gate_up))

    def rotary_embedding(self, positions, q, k, head_size, cos_sin, is_neox):
        half = cos_sin.shape[1] // 2
        cos, sin = cos_sin[:, :half].float(), cos_sin[:, half:].float()
        q3, k3 = q.view(q.shape[0], -1, head_size), k.view(k.shape[0], -1, head_size)
        new_q, new_k = self.torch_ops.rotary(positions, q3, k3, cos, sin, cos_sin)
        q3.copy_(new_q)
        k3.copy_(new_k)


def _runner(path, cap: str, dtype: str = "auto", quantization: str = "auto"):
    return ModelRunner(str(path), torch.device("cpu"), dtype, num_blocks=16, block_size=4,
                            max_positions=64, dummy=False, quantization=quantization,
                            cpu_isa=cap)


def _logits(runner: ModelRunner) -> torch.Tensor:
    ids = np.random.default_rng(0).integers(4, 500, size=9)
    batch = runner.make_batch(ids, np.array([9]), np.array([0]), np.arange(16).reshape(1, 16),
                              np.arange(9))
    return runner.run(batch)  # [9, V]


@pytest.mark.parametrize("fastest", ["onednn/float32", "torch/float32", "torch/bfloat16"])
def test_a_bf16_draft_on_the_avx2_path_runs_what_the_probe_found_fastest(tiny, monkeypatch,
                                                                         fastest):
    import transformers

    from vllm_ssd.server.model import cpu_kernel_choice

    real_timer = cpu_kernel_choice.time_candidate

    def timer(candidate, out_features, in_features):
        real_timer(candidate, out_features, in_features)  # builds and checks the kernel
        return 1.0 if candidate.label() == fastest else 2.0
    monkeypatch.setattr(cpu_kernel_choice, "time_candidate", timer)
    avx2 = _runner(tiny["draft_noisy_bf16"], "avx2", quantization="none")
    assert avx2.cpu_plan.isa.tier == "avx2"
    assert set(avx2.cpu_plan.probe_ms) == {"onednn/float32", "torch/float32", "torch/bfloat16"}
    assert f"{avx2.cpu_plan.linear}/{str(avx2.dtype)[6:]}" == fastest
    assert any(isinstance(m, OneDnnLinear) for m in avx2.model.modules()) == \
        fastest.startswith("onednn")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny["draft_noisy_bf16"],
                                                           dtype=torch.float32).eval()
    ids = np.random.default_rng(0).integers(4, 500, size=9)
    with torch.no_grad():
        expected = hf(torch.tensor(ids)[None]).logits[0]
    out = _logits(avx2)
    if avx2.dtype == torch.float32:
        assert torch.allclose(out, expected, atol=1e-3, rtol=1e-3)
    else:
        assert (out - expected).norm() / expected.norm() < 0.05
        assert (out.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.75


@pytest.mark.parametrize("cap", TIERS)
def test_forced_int8_is_close_on_every_tier_that_offers_it(tiny, cap):
    """Each tier this CPU can be capped to: int8 within 10% of float32 where the tier has
    32-bit int8 sums; elsewhere start-up stops naming the setting."""
    if TIERS.index(cap) > TIERS.index(THIS_CPU.tier):
        cap = "auto"  # this CPU's own tier
    plain = _logits(_runner(tiny["draft_noisy_bf16"], "avx2", "float32", "none"))
    if not THIS_CPU.capped(cap).exact_int8:
        with pytest.raises(SSDConfigError, match="'draft_quantization'"):
            _runner(tiny["draft_noisy_bf16"], cap, quantization="int8")
        return
    runner = _runner(tiny["draft_noisy_bf16"], cap, quantization="int8")
    assert runner.cpu_plan.linear in ("amx_int8", "onednn_int8")
    int8 = [m for m in runner.model.modules() if isinstance(m, (AmxInt8Linear,
                                                                OneDnnInt8Linear))]
    assert len(int8) >= 2 * 4 + 1  # qkv, o, gate_up, down per layer (2 layers), lm_head
    out = _logits(runner)
    assert (out - plain).norm() / plain.norm() < 0.1
    assert (out.argmax(-1) == plain.argmax(-1)).float().mean() >= 0.75


def test_float32_checkpoints_stay_float32_with_a_float_kernel(tiny):
    runner = _runner(tiny["draft"], "auto", quantization="none")
    assert runner.dtype == torch.float32 and runner.cpu_plan.linear in ("onednn", "torch")
    has_onednn = any(isinstance(m, OneDnnLinear) for m in runner.model.modules())
    assert has_onednn == (runner.cpu_plan.linear == "onednn")
