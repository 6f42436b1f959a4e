"""A compact dense decoder covering the Llama, Qwen2 and Qwen3 families.

The families differ only in attention bias (Qwen2) and per-head q/k RMSNorm
(Qwen3). Projections are fused (qkv, gate_up) at load time.
"""
from __future__ import annotations

import torch
from torch import nn

from vllm_ssd.arch import ModelArch
from vllm_ssd.server.model.kernels import Kernels
from vllm_ssd.server.model.layers import RMSNorm, RotaryEmbedding


class Attention(nn.Module):
    def __init__(self, arch: ModelArch):
        super().__init__()
        self.num_heads, self.num_kv_heads = arch.num_heads, arch.num_kv_heads
        self.head_dim = arch.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.qkv_proj = nn.Linear(arch.hidden_size, self.q_size + 2 * self.kv_size,
                                  bias=arch.attention_bias)
        self.o_proj = nn.Linear(self.q_size, arch.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, arch.rms_norm_eps) if arch.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, arch.rms_norm_eps) if arch.qk_norm else None

    def forward(self, hidden, positions, rotary, kv_cache, backend, meta):
        # hidden: [T, hidden_size]
        qkv = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)  # [T, H, D]
        k = k.view(-1, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        elif backend.rope_and_cache is not None:  # rotary and KV write in one kernel
            out = backend.rotary_forward(q, k, v, positions, rotary.cos_sin, kv_cache[0],
                                         kv_cache[1], meta, self.scale)
            return self.o_proj(out.reshape(-1, self.q_size))
        q, k = rotary(positions, q, k)
        out = backend.forward(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        return self.o_proj(out.reshape(-1, self.q_size))


class MLP(nn.Module):
    def __init__(self, arch: ModelArch):
        super().__init__()
        self.intermediate_size = arch.intermediate_size
        self.gate_up_proj = nn.Linear(arch.hidden_size, 2 * arch.intermediate_size, bias=False)
        self.down_proj = nn.Linear(arch.intermediate_size, arch.hidden_size, bias=False)
        self.kernels = Kernels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.kernels.silu_and_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, arch: ModelArch):
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = Attention(arch)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = MLP(arch)

    def forward(self, hidden, residual, positions, rotary, kv_cache, backend, meta):
        """hidden: this layer's input before the residual add; residual: the running sum
        (None for the first layer). Returns both for the next layer's fused add + norm."""
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm.add(hidden, residual)
        hidden = self.self_attn(hidden, positions, rotary, kv_cache, backend, meta)
        hidden, residual = self.post_attention_layernorm.add(hidden, residual)
        return self.mlp(hidden), residual


class DraftLM(nn.Module):
    def __init__(self, arch: ModelArch, max_positions: int):
        super().__init__()
        self.arch = arch
        self.embed_tokens = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(arch) for _ in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        if arch.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(arch, max_positions)

    def forward(self, input_ids, positions, kv_caches, backend, meta) -> torch.Tensor:
        # input_ids, positions: [T] -> hidden states [T, hidden_size]
        hidden, residual = self.embed_tokens(input_ids), None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden, residual = layer(hidden, residual, positions, self.rotary, kv_cache,
                                     backend, meta)
        return self.norm.add(hidden, residual)[0]

    def use_kernels(self, kernels: Kernels) -> None:
        for module in self.modules():
            if hasattr(module, "kernels"):
                module.kernels = kernels

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [L, hidden_size] -> [L, vocab] in float32
        return self.lm_head(hidden).float()
