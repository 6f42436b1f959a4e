"""Loads Hugging Face safetensors checkpoints into ``DraftLM`` (or dummy weights)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open

from vllm_ssd.arch import ModelArch
from vllm_ssd.server.model.cpu_linear import replace_linears
from vllm_ssd.server.model.kernels import load_kernels
from vllm_ssd.server.model.layers import RotaryEmbedding
from vllm_ssd.server.model.decoder import DraftLM

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# HF name (after "model.") -> (our parameter name, shard index inside a fused weight)
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def resolve_dtype(name: str, arch: ModelArch) -> torch.dtype:
    """A GPU draft's dtype: ``draft_dtype``, or the checkpoint's (CPU drafts: see
    ``cpu_kernel_choice``)."""
    return _DTYPES.get(arch.torch_dtype if name == "auto" else name, torch.float32)


def load_draft_model(model_dir: str, arch: ModelArch, dtype: torch.dtype,
                     device: torch.device, max_positions: int, dummy: bool,
                     cpu_linear: str = "torch") -> DraftLM:
    """The draft in ``dtype`` on ``device``; on a CPU its linear layers become ``cpu_linear``
    (a kind of ``cpu_linear.py``, chosen by ``cpu_kernel_choice``)."""
    with torch.device("meta"):
        model = DraftLM(arch, max_positions)
    model = model.to_empty(device=device).to(dtype)
    model.rotary = RotaryEmbedding(arch, max_positions, dtype).to(device)
    if dummy:
        _fill_dummy(model)
    else:
        _load_safetensors(model, Path(model_dir), arch)
    if arch.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model = model.eval().requires_grad_(False)
    model.use_kernels(load_kernels(device, dtype))
    if device.type == "cpu":
        replace_linears(model, cpu_linear, dtype)
    return model


def _fill_dummy(model: DraftLM) -> None:
    generator = torch.Generator(device="cpu").manual_seed(1234)
    for param in model.parameters():
        values = torch.rand(param.shape, generator=generator) * 2e-3 - 1e-3
        param.data.copy_(values.to(param.dtype))


def _load_safetensors(model: DraftLM, model_dir: Path, arch: ModelArch) -> None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir}")
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                target = _place(name, handle.get_tensor(name), params, arch)
                if target:
                    loaded.add(target)
    missing = set(params) - loaded - ({"lm_head.weight"} if arch.tie_word_embeddings else set())
    if missing:
        raise ValueError(f"draft checkpoint {model_dir} lacks weights: {sorted(missing)[:5]}")


def _place(name: str, tensor: torch.Tensor, params: dict, arch: ModelArch) -> str | None:
    """Copies one checkpoint tensor into its (possibly fused) parameter."""
    match = _LAYER_RE.match(name)
    if match is None:
        ours = name.removeprefix("model.")
        if ours not in params:
            return None
        params[ours].data.copy_(tensor)
        return ours
    layer, module, kind = match.groups()
    fused, shard = _FUSED.get(module, (module, None))
    ours = f"layers.{layer}.{fused}.{kind}"
    if ours not in params:
        return None
    if shard is None:
        params[ours].data.copy_(tensor)
        return ours
    q_size, kv_size = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    sizes = [q_size, kv_size, kv_size] if "qkv" in fused else [arch.intermediate_size] * 2
    start = sum(sizes[:shard])
    params[ours].data[start:start + sizes[shard]].copy_(tensor)
    return ours
