"""Marks on the draft device's timeline, and host <-> device copies that do not block.

On a GPU a mark is a CUDA event: taking it does not wait for the device, ``done`` asks
without waiting, ``wait`` is a host sync (the server's one per round). On a CPU every
pass is synchronous, so a mark is the host clock.
"""
from __future__ import annotations

import time

import numpy as np
import torch


class DeviceClock:
    def __init__(self, device: torch.device):
        self.on_cuda = device.type == "cuda"

    def mark(self):
        if not self.on_cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def done(self, mark) -> bool:
        return mark.query() if self.on_cuda else True

    def wait(self, mark) -> None:
        if self.on_cuda:
            mark.synchronize()

    def seconds(self, start, end) -> float:
        """Device time between two marks; ``end`` must be done."""
        return start.elapsed_time(end) / 1e3 if self.on_cuda else end - start

    def download(self, tensor: torch.Tensor) -> torch.Tensor:
        """Starts a device -> host copy; read the result only after a later mark is done."""
        if not self.on_cuda:
            return tensor
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor, non_blocking=True)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host -> device without blocking the host on a GPU: a pinned staging copy lets the
    next batch be prepared while the previous forward still runs (a copy from pageable
    memory would wait for the device)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
