"""Elementwise kernels of the draft model: vLLM's fused ops when its compiled extension
is importable (both its CUDA and CPU builds ship them), else plain PyTorch.

A small draft's decode step is bound by the number of kernels on a GPU: unfused RMSNorm,
residual adds, rotary and SiLU-and-mul cost a dozen tiny kernels per layer. The fused ops
cut that to one each (and rotary works in place on the qkv projection's output). On a CPU
core they save the float32 round trips: 3-6 ms of a ~60 ms Qwen2.5-0.5B decode step.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


FUSED_OPS = ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary_embedding")


class Kernels:
    def __init__(self, ops=None, fused: frozenset[str] = frozenset(FUSED_OPS)):
        """ops: torch.ops._C of vLLM's compiled extension (None: PyTorch throughout);
        fused: the names of its ops to use, the others run in PyTorch."""
        self.ops = ops
        self.fused = fused if ops is not None else frozenset()

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # x: [..., dim]
        if "rms_norm" in self.fused:
            flat = x.reshape(-1, x.shape[-1]).contiguous()
            out = torch.empty_like(flat)
            self.ops.rms_norm(out, flat, weight, eps)
            return out.view(x.shape)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x32.to(x.dtype)

    def add_rms_norm(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(rms_norm(x + residual), x + residual); x [T, dim] and residual are consumed."""
        if "fused_add_rms_norm" in self.fused:
            self.ops.fused_add_rms_norm(x, residual, weight, eps)  # in place
            return x, residual
        residual = residual + x
        return self.rms_norm(residual, weight, eps), residual

    def silu_and_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        # gate_up: [T, 2 * I] -> [T, I]
        if "silu_and_mul" in self.fused:
            out = gate_up.new_empty(gate_up.shape[0], gate_up.shape[1] // 2)
            self.ops.silu_and_mul(out, gate_up.contiguous())
            return out
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def rotary(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor, cos_sin: torch.Tensor):
        # q: [T, H, D]; k: [T, Hkv, D] (views into the fused qkv output, rotated in place);
        # cos, sin: [max_pos, D/2] float32; cos_sin: [max_pos, D] in the model's dtype
        if "rotary_embedding" in self.fused:
            q_flat, k_flat = q.view(q.shape[0], -1), k.view(k.shape[0], -1)  # views, no copy
            self.ops.rotary_embedding(positions, q_flat, k_flat, q.shape[-1], cos_sin, True)
            return q, k
        cos_p = cos[positions].unsqueeze(1)  # [T, 1, D/2]
        sin_p = sin[positions].unsqueeze(1)
        return _rotate(q, cos_p, sin_p), _rotate(k, cos_p, sin_p)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def load_kernels(device: torch.device, dtype: torch.dtype = torch.float32) -> Kernels:
    """vLLM's fused ops where its extension runs them on ``device`` in ``dtype`` and agrees
    with PyTorch, op by op (a CUDA build has no CPU kernels; a CPU build may lack a dtype on
    this ISA); PyTorch for the rest."""
    if device.type not in ("cuda", "cpu"):
        return Kernels()
    try:
        import vllm._custom_ops  # noqa: F401  (loads the extension's ops)
    except Exception as error:  # no compiled vLLM extension here
        logger.info("vLLM fused kernels unavailable (%s); using PyTorch ops",
                    type(error).__name__)
        return Kernels()
    fused = agreeing_ops(torch.ops._C, device, dtype)
    logger.info("draft model on %s in %s: vLLM's fused %s; PyTorch %s", device.type, dtype,
                " / ".join(sorted(fused)) or "none",
                " / ".join(n for n in FUSED_OPS if n not in fused) or "for none")
    return Kernels(torch.ops._C, fused) if fused else Kernels()


def agreeing_ops(ops, device: torch.device, dtype: torch.dtype) -> frozenset[str]:
    """Runs each fused op of ``ops`` once on a small input; returns those that run and agree
    with PyTorch."""
    fused, reference = Kernels(ops), Kernels()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 128, generator=generator).to(device, dtype)  # [T, dim]
    weight = torch.rand(128, generator=generator).to(device, dtype) + 0.5
    residual = torch.randn(3, 128, generator=generator).to(device, dtype)
    positions = torch.tensor([0, 5, 9], device=device)
    angles = torch.outer(torch.arange(16.0), torch.rand(32, generator=generator))  # [16, D/2]
    cos, sin = angles.cos().to(device), angles.sin().to(device)
    cos_sin = torch.cat((cos, sin), dim=-1).to(dtype)
    qk = torch.randn(3, 3, 64, generator=generator).to(device, dtype)  # [T, 2 + 1 heads, D]
    checks = {
        "rms_norm": lambda k: k.rms_norm(x, weight, 1e-6),
        "fused_add_rms_norm": lambda k: k.add_rms_norm(x.clone(), residual.clone(), weight,
                                                       1e-6)[0],
        "silu_and_mul": lambda k: k.silu_and_mul(x),
        "rotary_embedding": lambda k: torch.cat(k.rotary(
            positions, qk[:, :2].clone(), qk[:, 2:].clone(), cos, sin, cos_sin), dim=1),
    }
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    agreeing = set()
    for name, run in checks.items():
        try:
            got, expected = run(fused).float(), run(reference).float()
        except Exception as error:  # the op is missing or fails for this device / dtype
            logger.info("vLLM's %s fails in %s on %s: %s", name, dtype, device.type,
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
            continue
        if torch.allclose(got, expected, atol=tolerance, rtol=tolerance):
            agreeing.add(name)
        else:
            logger.info("vLLM's %s disagrees with PyTorch in %s on %s (max |diff| %.3g)",
                        name, dtype, device.type, float((got - expected).abs().max()))
    return frozenset(agreeing)
