"""Gives a CPU draft server's cores to the target once speculation stands aside.

vLLM's CPU worker binds its OpenMP threads at start-up (``VLLM_CPU_OMP_THREADS_BIND``, or
the affinity it inherited) and replaces ``torch.set_num_threads`` with a warning, so the
cores are handed over below vLLM: the thread count through ``torch._C.set_num_threads``,
then every thread of this process (the OpenMP pool included, once a parallel region has
started it) is allowed on the target's cores plus the draft's.
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def cores_gained(draft_cpus: list[int]) -> list[int]:
    """The draft's cores this process does not run on yet."""
    current = os.sched_getaffinity(0)
    return [cpu for cpu in draft_cpus if cpu not in current]


def core_gain(draft_cpus: list[int]) -> float:
    """How many times its current cores the target would run on with the draft's added."""
    current = len(os.sched_getaffinity(0))
    return (current + len(cores_gained(draft_cpus))) / max(current, 1)


def give_cores_to_target(draft_cpus: list[int]) -> str:
    """Adds the draft's cores to this process and its OpenMP pool; returns what was done
    (for the stand-aside log line), or why nothing could be."""
    extra = cores_gained(draft_cpus)
    if not extra:
        return f"the target already runs on CPUs {sorted(os.sched_getaffinity(0))}"
    cores = sorted(os.sched_getaffinity(0) | set(extra))
    try:
        import torch

        torch._C.set_num_threads(len(cores))
        torch.ones(1 << 16).sum()  # starts the OpenMP pool's new threads
        for task in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(task), cores)
    except (OSError, RuntimeError, AttributeError) as error:
        return f"the target could not take the draft's CPUs {extra} ({error})"
    return f"the target now runs {len(cores)} threads on CPUs {cores}"
