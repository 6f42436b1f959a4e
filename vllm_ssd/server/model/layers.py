"""Small building blocks of the draft model: RMSNorm and rotary embeddings."""
from __future__ import annotations

import math

import torch
from torch import nn

from vllm_ssd.arch import ModelArch
from vllm_ssd.server.model.kernels import Kernels


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.kernels = Kernels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., dim]; float32 statistics like the reference implementations
        return self.kernels.rms_norm(x, self.weight, self.eps)

    def add(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual), fused where the kernels allow."""
        return self.kernels.add_rms_norm(x, residual, self.weight, self.eps)


def rope_inv_freq(arch: ModelArch) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2], with Llama-3 or linear scaling applied."""
    dim = arch.head_dim
    inv_freq = 1.0 / (arch.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    params = dict(arch.rope_scaling)
    if arch.rope_type == "linear":
        inv_freq = inv_freq / float(params["factor"])
    elif arch.rope_type == "llama3":
        inv_freq = _llama3_scale(inv_freq, params)
    return inv_freq.float()


def _llama3_scale(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    factor = float(params["factor"])
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old_len = float(params.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Neox-style (rotate-half) rotary embedding with a precomputed cos/sin table."""

    def __init__(self, arch: ModelArch, max_positions: int,
                 cos_sin_dtype: torch.dtype = torch.float32):
        super().__init__()
        positions = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(positions, rope_inv_freq(arch))  # [max_positions, head_dim // 2]
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)
        self.register_buffer("cos_sin", torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(
            cos_sin_dtype), persistent=False)  # [max_positions, head_dim], fused-kernel layout
        self.kernels = Kernels()

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        # positions: [T]; q: [T, H, D]; k: [T, Hkv, D]
        return self.kernels.rotary(positions, q, k, self.cos, self.sin, self.cos_sin)
