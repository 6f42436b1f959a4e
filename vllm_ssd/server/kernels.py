"""Elementwise kernels of the draft model: vLLM's fused ops when its compiled extension
is importable (both its CUDA and CPU builds ship them), else plain PyTorch.

A small draft's decode step is launch-bound on a GPU: unfused RMSNorm, rotary and
SiLU-and-mul cost a dozen tiny kernels per layer. The fused ops cut that to one each.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


class Kernels:
    def __init__(self, ops=None):
        self.ops = ops  # torch.ops._C of vLLM's compiled extension, or None for PyTorch

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # x: [..., dim]
        if self.ops is not None:
            flat = x.reshape(-1, x.shape[-1]).contiguous()
            out = torch.empty_like(flat)
            self.ops.rms_norm(out, flat, weight, eps)
            return out.view(x.shape)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x32.to(x.dtype)

    def silu_and_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        # gate_up: [T, 2 * I] -> [T, I]
        if self.ops is not None:
            out = gate_up.new_empty(gate_up.shape[0], gate_up.shape[1] // 2)
            self.ops.silu_and_mul(out, gate_up.contiguous())
            return out
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    def rotary(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor, cos_sin: torch.Tensor):
        # q: [T, H, D]; k: [T, Hkv, D]; cos, sin: [max_pos, D/2]; cos_sin: [max_pos, D]
        if self.ops is not None:
            head_dim = q.shape[-1]
            q_flat = q.reshape(q.shape[0], -1).contiguous()
            k_flat = k.reshape(k.shape[0], -1).contiguous()
            self.ops.rotary_embedding(positions, q_flat, k_flat, head_dim,
                                      cos_sin.to(q.dtype), True)
            return q_flat.view(q.shape), k_flat.view(k.shape)
        cos_p = cos[positions].unsqueeze(1)  # [T, 1, D/2]
        sin_p = sin[positions].unsqueeze(1)
        return _rotate(q, cos_p, sin_p), _rotate(k, cos_p, sin_p)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def load_kernels(device: torch.device) -> Kernels:
    """Fused vLLM ops on CUDA (where they matter); PyTorch elsewhere."""
    if device.type != "cuda":
        return Kernels()
    try:
        import vllm._custom_ops  # noqa: F401  (loads the extension's ops)
        if all(hasattr(torch.ops._C, n) for n in ("rms_norm", "silu_and_mul", "rotary_embedding")):
            logger.info("draft model uses vLLM's fused rms_norm / rotary / silu_and_mul kernels")
            return Kernels(torch.ops._C)
    except Exception as error:  # no compiled vLLM extension here
        logger.info("vLLM fused kernels unavailable (%s); using PyTorch ops", error)
    return Kernels()
