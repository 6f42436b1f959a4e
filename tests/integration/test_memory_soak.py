"""Memory levels off under a long, abort-heavy load: the draft server's resident size stops
growing after warm-up (it grew by hundreds of MB through oneDNN's primitive cache), and
in the engine itself neither the Python heap nor the number of live tensors grows."""
from __future__ import annotations

import gc
import re
import tracemalloc
import warnings

import numpy as np
import torch

from vllm_ssd import protocol as P
from vllm_ssd.client import ServerConnection
from vllm_ssd.server.factory import build_engine
from vllm_ssd.settings import SSDSettings

SLOTS, K = 16, 4
WARM_ROUNDS, SOAK_ROUNDS, STEPS_PER_ROUND = 6, 6, 40
# anonymous resident bytes over the soak rounds: with oneDNN's default cache the server
# grew ~15 MB a round here; levelled off it stays within the allocator's noise
MAX_SERVER_GROWTH = 32 << 20


class AbortHeavyLoad:
    """Requests join every step, most are aborted early; the rest run to a random length."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.active = np.zeros(SLOTS, dtype=bool)
        self.length = np.zeros(SLOTS, dtype=np.int64)
        self.limit = np.zeros(SLOTS, dtype=np.int64)
        self.seq = 0

    def next_step(self) -> P.StepRequest:
        rng = self.rng
        ending = self.active & ((self.length >= self.limit) | (rng.random(SLOTS) < 0.15))
        self.active &= ~ending
        joining = ~self.active & (rng.random(SLOTS) < 0.5)
        self.active |= joining
        self.length[joining] = 0
        self.limit[joining] = rng.integers(20, 200, int(joining.sum()))
        slots = np.nonzero(self.active)[0]  # [B]
        is_new = self.length[slots] == 0
        lens = np.where(is_new, rng.integers(5, 60, len(slots)), rng.integers(1, K + 2, len(slots)))
        self.length[slots] += lens
        self.seq += 1
        return P.StepRequest(
            seq=self.seq, new_requests=[P.NewRequest(slot=int(s), temperature=0.0)
                                        for s in np.nonzero(joining)[0]],
            finished_slots=[int(s) for s in np.nonzero(ending & ~joining)[0]],
            slots=P.pack(slots), num_new_tokens=P.pack(lens),
            new_tokens=P.pack(rng.integers(4, 512, int(lens.sum()))),
            is_step_delta=P.pack(~is_new, np.uint8), max_drafts=P.pack(np.full(len(slots), K)),
            target_step_s=0.02)


def soak_settings(tiny, **extra) -> SSDSettings:
    return SSDSettings(draft_model=str(tiny["target"]), draft_device="cpu", mode="ssd",
                       build_plan="full", enforce_eager=True, log_interval_s=0, **extra)


def soak_hello() -> P.Hello:
    return P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                   target_vocab_size=512, max_model_len=256, max_num_seqs=SLOTS)


def test_the_draft_servers_memory_levels_off(tiny, tmp_path):
    client = ServerConnection(soak_settings(tiny, runtime_dir=str(tmp_path)), soak_hello())
    client.start(wait=True)
    try:
        load, resident = AbortHeavyLoad(), []
        for _ in range(WARM_ROUNDS + SOAK_ROUNDS):
            for _ in range(STEPS_PER_ROUND):
                client.step(load.next_step())
            resident.append(anonymous_resident_bytes(client.pid))
        steps = client.stats()["steps"]
    finally:
        client.close()
    assert steps == (WARM_ROUNDS + SOAK_ROUNDS) * STEPS_PER_ROUND
    assert resident[-1] - resident[WARM_ROUNDS - 1] < MAX_SERVER_GROWTH, \
        [r >> 20 for r in resident]


def anonymous_resident_bytes(pid: int) -> int:
    """RssAnon of a process: its heap and other private memory (no mapped files)."""
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"RssAnon:\s+(\d+) kB", handle.read()).group(1)) << 10


def footprint() -> tuple[int, int]:
    """(traced Python heap bytes, live tensors); the tensor scan runs first, as touching
    every object can import modules lazily (traced, but not the engine's)"""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated attributes touched by the scan
        tensors = sum(isinstance(o, torch.Tensor) for o in gc.get_objects())
    return tracemalloc.get_traced_memory()[0], tensors


def test_the_engine_keeps_no_python_objects_or_kv_blocks_per_request(tiny):
    engine = build_engine(soak_settings(tiny), soak_hello())
    load = AbortHeavyLoad(seed=1)
    footprint()  # any lazy import the scan triggers happens before tracing
    tracemalloc.start()
    try:
        samples = []
        for round_index in range(WARM_ROUNDS + SOAK_ROUNDS // 2):
            for _ in range(STEPS_PER_ROUND):
                engine.step(load.next_step())
                engine.build(lambda: False)
            if round_index >= WARM_ROUNDS - 1:
                samples.append(footprint())
    finally:
        tracemalloc.stop()
    heap, tensors = (np.array(column) for column in zip(*samples))
    assert heap[-1] - heap[0] < 256 << 10  # a leak of 1 KB per step fails this
    assert tensors.max() - tensors.min() <= 8
    engine.builder.collect()
    engine.builder.release_branches()
    engine.table.release(np.arange(SLOTS))
    assert engine.blocks.num_free == engine.blocks.num_blocks - 1  # no KV block was lost
