"""The CPU draft's linear layers, one class per GEMM kernel.

A decode step of a small draft is a chain of memory-bound GEMVs, so the kernel and the
bytes per weight decide its speed. The kinds, by name:

- ``torch``: ``torch.nn.functional.linear`` (MKL / oneDNN inside PyTorch); runs everywhere.
- ``onednn``: vLLM's prepacked oneDNN GEMM in the weights' dtype (bfloat16 needs
  avx512_bf16 or AMX; float32 runs on AVX2).
- ``onednn_int8``: W8A8 through oneDNN's int8 matmul (per-channel weight scales, per-token
  activation scales): half the bytes of bfloat16; fast where the CPU has VNNI.
- ``amx_int8``: the same W8A8 scheme through vLLM's AMX kernel (bfloat16 activations).

The int8 kinds change the drafts slightly, never the output: the target verifies every
draft. ``cpu_kernel_choice`` decides which kind a model gets.
"""
from __future__ import annotations

import torch
from torch import nn

INT8_KINDS = ("amx_int8", "onednn_int8")
FLOAT_KINDS = ("onednn", "torch")


def vllm_cpu_ops():
    """vLLM's ``_custom_ops`` where its CPU build with oneDNN GEMMs is importable, else None."""
    try:
        from vllm import _custom_ops as ops
    except Exception:  # vLLM absent, or a GPU build without these ops
        return None
    return ops if getattr(ops, "_supports_onednn", False) else None


def _int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantisation: int8 [N, K] and float32 scales [N]."""
    scales = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0  # [N]
    quantized = (weight.float() / scales[:, None]).round().clamp(-127, 127)
    return quantized.to(torch.int8), scales


class OneDnnLinear(nn.Module):
    """Prepacked oneDNN GEMM in the weight's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, ops):
        super().__init__()
        self.ops = ops
        self.handler = ops.create_onednn_mm(weight.t(), 32)  # weight [N, K], packed as [K, N]
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N]
        return self.ops.onednn_mm(self.handler, x, self.bias)


class OneDnnInt8Linear(nn.Module):
    """W8A8 through oneDNN: int8 weight [N, K] (packed), dynamic per-token activation scales."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, ops,
                 out_dtype: torch.dtype):
        super().__init__()
        self.ops = ops
        quantized, self.scales = _int8_weight(weight)  # the handler reads the scales in place
        # oneDNN wants the [K, N] view of a row-major [N, K] weight
        self.handler = ops.create_onednn_scaled_mm(quantized.t(), self.scales, out_dtype, True,
                                                   False, 32)
        self.bias = None if bias is None else bias.to(out_dtype)
        self.out_features, self.out_dtype = weight.shape[0], out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] -> [T, N] in the model's dtype
        out = torch.empty((x.shape[0], self.out_features), dtype=self.out_dtype)
        if x.shape[0] == 0:
            return out
        x_q, x_scales, _ = self.ops.onednn_scaled_int8_quant(x.contiguous(), None, None, True)
        return self.ops.onednn_scaled_mm(self.handler, x_q, out, x_scales, None, None, self.bias)


class AmxInt8Linear(nn.Module):
    """W8A8 through vLLM's AMX kernel: int8 weight [N, K] (VNNI-packed), scales [N]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        quantized, self.scales = _int8_weight(weight)
        self.packed = torch.ops._C.convert_weight_packed(quantized)
        self.bias = None if bias is None else bias.float()
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [T, K] bfloat16 -> [T, N]
        if x.shape[0] == 0:  # the kernel dies with SIGFPE on an empty batch
            return x.new_empty((0, self.out_features))
        return torch.ops._C.int8_scaled_mm_with_quant(x, self.packed, self.scales, self.bias,
                                                      x.dtype, True)


def amx_int8_fits(in_features: int, out_features: int, dtype: torch.dtype) -> bool:
    """The AMX kernel takes bfloat16 activations and whole tiles (K % 32, N % 16)."""
    return dtype == torch.bfloat16 and in_features % 32 == 0 and out_features % 16 == 0


def make_linear(kind: str, weight: torch.Tensor, bias: torch.Tensor | None,
                dtype: torch.dtype) -> nn.Module:
    """One linear layer of ``kind`` for a weight [N, K]; raises if the kernel cannot run it."""
    weight = weight.detach().to(dtype)
    bias = None if bias is None else bias.detach().to(dtype)
    if kind == "torch":
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                           device="meta")
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias, requires_grad=False)
        return linear
    if kind == "amx_int8":
        if not hasattr(torch.ops._C, "int8_scaled_mm_with_quant"):
            raise RuntimeError("vLLM's AMX int8 kernel is not in this build")
        return AmxInt8Linear(weight, bias)
    ops = vllm_cpu_ops()
    if ops is None:
        raise RuntimeError("vLLM's CPU oneDNN ops are not importable")
    if kind == "onednn":
        return OneDnnLinear(weight, bias, ops)
    if kind == "onednn_int8":
        return OneDnnInt8Linear(weight, bias, ops, dtype)
    raise ValueError(f"unknown CPU linear kind {kind!r}")


def replace_linears(model: nn.Module, kind: str, dtype: torch.dtype) -> int:
    """Swaps every ``nn.Linear`` of ``model`` for ``kind`` (``amx_int8`` only where the tile
    shapes fit; other layers of an int8 model take ``onednn``); returns the count."""
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    if kind == "torch":
        return len(targets)
    packed = 0  # bytes of the weights the new layers hold (no longer parameters)
    for parent, name, linear in targets:
        layer_kind = kind
        if kind == "amx_int8" and not amx_int8_fits(linear.in_features, linear.out_features,
                                                    dtype):
            layer_kind = "onednn"
        setattr(parent, name, make_linear(layer_kind, linear.weight, linear.bias, dtype))
        per_value = 1 if layer_kind in INT8_KINDS else torch.finfo(dtype).bits // 8
        packed += linear.weight.numel() * per_value
    model.packed_weight_bytes = packed
    return len(targets)
