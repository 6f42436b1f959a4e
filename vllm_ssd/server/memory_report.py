"""The draft server's memory after start-up: what its weights and KV cache hold, what the
process holds, and handing the loader's freed heap back to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

import torch

from vllm_ssd.server.kv.budget import GIB

logger = logging.getLogger(__name__)


def resident_bytes() -> int:
    """This process's resident set (VmRSS); 0 where /proc cannot be read."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def release_free_heap() -> None:
    """glibc keeps memory freed while loading (a checkpoint's dtype conversion, weights
    repacked for oneDNN) in its arenas; ``malloc_trim`` returns it to the system."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to trim


def weight_bytes(model: torch.nn.Module) -> int:
    """The draft's parameters plus the weights its CPU linears hold packed."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params + int(getattr(model, "packed_weight_bytes", 0))


def log_memory(model: torch.nn.Module, kv_cache: torch.Tensor,
               before_load: int) -> dict[str, float]:
    """One INFO line: resident memory, the runtime's share before the model loaded
    (``before_load``), the weights, the KV cache and the rest; returns the figures."""
    figures = {"resident": resident_bytes(), "runtime": before_load,
               "weights": weight_bytes(model), "kv": kv_cache.numel() * kv_cache.element_size()}
    figures["other"] = figures["resident"] - sum(figures[k] for k in ("runtime", "weights", "kv"))
    logger.info("draft server memory: resident %.2f GiB = runtime before loading %.2f GiB + "
                "weights %.2f GiB + KV cache %.2f GiB + other %.2f GiB",
                *(figures[k] / GIB for k in ("resident", "runtime", "weights", "kv", "other")))
    return figures
