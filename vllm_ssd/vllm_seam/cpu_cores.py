"""Gives a CPU draft server's cores to the target once speculation stands aside.

vLLM's CPU worker binds its OpenMP threads at start-up (``VLLM_CPU_OMP_THREADS_BIND``, or
the affinity it inherited) and replaces ``torch.set_num_threads`` with a warning, so the
cores are handed over below vLLM: the thread count through ``torch._C.set_num_threads``,
then every thread of this process (the OpenMP pool included, once a parallel region has
started it) is allowed on the target's cores plus the draft's. So are the processes above
the worker that were pinned to the same cores (vLLM's engine-core process, which waits for
the worker's output by spinning, and the front end): left on the target's cores they would
take turns with its OpenMP threads there.
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
    pinned = os.sched_getaffinity(0)
    cores = sorted(pinned | set(extra))
    try:
        import torch

        torch._C.set_num_threads(len(cores))
        torch.ones(1 << 16).sum()  # starts the OpenMP pool's new threads
        widen_process(os.getpid(), cores)
    except (OSError, RuntimeError, AttributeError) as error:
        return f"the target could not take the draft's CPUs {extra} ({error})"
    above = widen_ancestors(pinned, cores)
    return f"the target now runs {len(cores)} threads on CPUs {cores}" + (
        f" (and {above} engine process{'es' if above > 1 else ''} above it)" if above else "")


def widen_process(pid: int, cores: list[int]) -> None:
    """Allows every thread of process ``pid`` on ``cores``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cores)


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def widen_ancestors(pinned: set[int], cores: list[int]) -> int:
    """Widens to ``cores`` the processes above this one that run on exactly ``pinned`` (the
    target's cores), up to the first that does not; returns how many were widened."""
    widened, pid = 0, parent_pid(os.getpid())
    while pid > 1:
        try:
            if os.sched_getaffinity(pid) != pinned:
                break
            widen_process(pid, cores)
            pid = parent_pid(pid)
        except OSError as error:
            logger.info("process %d keeps its CPUs (%s)", pid, error)
            break
        widened += 1
    return widened
