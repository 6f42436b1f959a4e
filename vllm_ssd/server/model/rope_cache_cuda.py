"""One Triton kernel for rotary embedding and the KV-cache write of a CUDA draft's layer.

Unfused, a layer runs vLLM's rotary kernel (q and k in place) and then its
reshape_and_cache_flash (k and v into the paged cache): two launches of about 1.8 us
each, 48 of a 0.5B draft's ~320 kernels per step. This kernel does both: each program
takes one head of one token, rotates it (neox layout, float32 arithmetic) and writes it
back in place (q) or into the cache slot (k, and v unrotated). Built and checked on a
probe at load; where Triton or the check fails, the unfused ops stay.
"""
from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rope_and_cache(q_ptr, k_ptr, v_ptr, positions_ptr, cos_sin_ptr, key_cache_ptr,
                       value_cache_ptr, slots_ptr, token_stride, cos_sin_stride, slot_stride,
                       NUM_Q_HEADS: tl.constexpr, HALF: tl.constexpr):
        token = tl.program_id(0)
        head = tl.program_id(1)  # q heads first, then kv heads
        offsets = tl.arange(0, HALF)
        position = tl.load(positions_ptr + token)
        cos = tl.load(cos_sin_ptr + position * cos_sin_stride + offsets).to(tl.float32)
        sin = tl.load(cos_sin_ptr + position * cos_sin_stride + HALF + offsets).to(tl.float32)
        if head < NUM_Q_HEADS:
            src = q_ptr + token * token_stride + head * 2 * HALF
            dst = src
        else:
            kv_head = head - NUM_Q_HEADS
            src = k_ptr + token * token_stride + kv_head * 2 * HALF
            slot = tl.load(slots_ptr + token)
            dst = key_cache_ptr + slot * slot_stride + kv_head * 2 * HALF
            v_src = v_ptr + token * token_stride + kv_head * 2 * HALF
            v_dst = value_cache_ptr + slot * slot_stride + kv_head * 2 * HALF
            tl.store(v_dst + offsets, tl.load(v_src + offsets))
            tl.store(v_dst + HALF + offsets, tl.load(v_src + HALF + offsets))
        x1 = tl.load(src + offsets).to(tl.float32)
        x2 = tl.load(src + HALF + offsets).to(tl.float32)
        out_type = dst.dtype.element_ty
        tl.store(dst + offsets, (x1 * cos - x2 * sin).to(out_type))
        tl.store(dst + HALF + offsets, (x2 * cos + x1 * sin).to(out_type))

    return rope_and_cache


class RopeAndCache:
    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, q, k, v, positions, cos_sin, key_cache, value_cache, slot_mapping):
        # q [T, H, D], k and v [T, Hkv, D]: strided views of one qkv row [T, (H + 2 Hkv) D];
        # cos_sin [max_pos, D]; caches [num_blocks, block_size, Hkv, D]; slot_mapping [T]
        tokens, num_q_heads, head_dim = q.shape
        grid = (tokens, num_q_heads + k.shape[1])
        self.kernel[grid](q, k, v, positions, cos_sin, key_cache, value_cache, slot_mapping,
                          q.stride(0), cos_sin.stride(0), key_cache.stride(1),
                          NUM_Q_HEADS=num_q_heads, HALF=head_dim // 2)


def fused_rope_and_cache(device: torch.device, dtype: torch.dtype,
                         head_dim: int) -> RopeAndCache | None:
    """The fused kernel when Triton builds it for ``device`` and it writes what the
    PyTorch reference writes on a probe; else None."""
    if device.type != "cuda" or head_dim % 2 or (head_dim // 2) & (head_dim // 2 - 1):
        return None
    try:
        fused = RopeAndCache(_build_kernel())
        if _agrees(fused, rope_and_cache_reference, device, dtype, head_dim):
            logger.info("draft layers use the fused rotary + KV-cache-write kernel")
            return fused
        logger.info("fused rotary + KV write disagrees with the unfused ops; not used")
    except Exception as error:  # no Triton for this device, or it failed to compile
        logger.info("fused rotary + KV write unavailable (%s)", str(error).splitlines()[0])
    return None


def rope_and_cache_reference(q, k, v, positions, cos_sin, key_cache, value_cache,
                             slot_mapping) -> None:
    """The same in PyTorch: q rotated in place, rotated k and v written at their slots."""
    half = cos_sin.shape[1] // 2
    cos = cos_sin[positions, :half].float().unsqueeze(1)  # [T, 1, D/2]
    sin = cos_sin[positions, half:].float().unsqueeze(1)

    def rotate(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    q.copy_(rotate(q))
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, rotate(k))
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v)


def _agrees(fused, reference, device, dtype, head_dim: int) -> bool:
    generator = torch.Generator(device="cpu").manual_seed(0)
    qkv = torch.randn(5, 4 + 2 * 2, head_dim, generator=generator).to(device, dtype)
    positions = torch.tensor([0, 7, 3, 30, 12], device=device)
    angles = torch.rand(32, head_dim // 2, generator=generator) * 6.28  # [max_pos, D/2]
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1).to(device, dtype)
    slots = torch.tensor([0, 17, 3, 30, 9], dtype=torch.int64, device=device)
    results = []
    for write in (fused, reference):
        copy = qkv.clone()
        caches = torch.zeros(2, 2, 16, 2, head_dim, dtype=dtype, device=device)
        write(copy[:, :4], copy[:, 4:6], copy[:, 6:], positions, cos_sin, caches[0], caches[1],
              slots)
        results.append((copy[:, :4].float(), caches.float()))
    (q_a, cache_a), (q_b, cache_b) = results
    return torch.allclose(q_a, q_b, atol=2e-2, rtol=2e-2) and \
        torch.allclose(cache_a, cache_b, atol=2e-2, rtol=2e-2)
