"""vLLM's engine-core process waits for its CPU worker without spinning, where SSD runs.

vLLM's shared-memory message queue (``shm_broadcast.SpinCondition``) lets a reader spin on
``sched_yield`` for ``busy_loop_s`` (1 s) after each read before it sleeps on a socket.
With speculative decoding the engine core schedules synchronously, so between two reads
of the worker's output it spins through the whole target step: on a CPU it runs on the
target's cores and takes turns with the target's OpenMP threads there (measured on 2 AVX2
cores: about 75% of a core while the target decoded). Patched, a reader in that window
naps instead of yielding, NAP_S at first and twice as long each look after, up to
NAP_MAX_S (``nap_seconds``): at most NAP_MAX_S of latency against CPU steps of tens to
hundreds of milliseconds, and a few hundred wake-ups a second at most (a fixed 0.2 ms
nap still took 14% of a core). (Not waiting for the writer's
notification instead: the notifying socket drops a notification while the previous one is
still queued, which the spinning window hides; without it reads stalled for seconds.)

The front end sets ``envs.QUIET_WAIT`` when it translates an SSD config for a CPU target;
each vLLM process started from it inherits the variable and patches the queue when the
plugin loads (``install_quiet_wait``), before the executor builds its queues.
"""
from __future__ import annotations

import functools
import logging
import os
import time

from vllm_ssd import envs

logger = logging.getLogger(__name__)
_MARK = "_vllm_ssd_quiet_wait"
NAP_S = 0.0001  # a reader's first pause between looks at the queue while it expects a message
NAP_MAX_S = 0.002  # its longest
_NAPS = "_vllm_ssd_naps"  # on a reader: (its last read's time, looks since)


def nap_seconds(looks: int) -> float:
    """The pause after the ``looks``-th look since the last read (0: the first)."""
    return min(NAP_MAX_S, NAP_S * 2.0 ** min(looks, 32))


def request_quiet_wait() -> None:
    """Asks the vLLM processes this one starts to wait for their workers without spinning
    (unless the variable was set: ``VLLM_SSD_QUIET_WAIT=0`` keeps vLLM's spinning)."""
    os.environ.setdefault(envs.QUIET_WAIT, "1")


def install_quiet_wait(environ: dict[str, str] | None = None) -> bool:
    """Makes readers of vLLM's message queue sleep instead of spinning, where the front
    end asked for it; returns whether the patch is in place."""
    if not envs.quiet_wait(environ):
        return False
    try:
        from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
    except ImportError as error:
        logger.info("vLLM's message queue keeps spinning (%s)", error)
        return False
    original = SpinCondition.wait
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def wait(self, timeout_ms: int | None = None) -> None:
        if time.monotonic() <= self.last_read + self.busy_loop_s:
            last_read, looks = getattr(self, _NAPS, (None, 0))
            looks = looks + 1 if last_read == self.last_read else 0
            setattr(self, _NAPS, (self.last_read, looks))
            time.sleep(nap_seconds(looks))
            return
        original(self, timeout_ms)

    setattr(wait, _MARK, True)
    SpinCondition.wait = wait
    return True
