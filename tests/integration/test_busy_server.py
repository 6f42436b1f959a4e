"""A busy draft server still answers: statistics while a build runs, and the other
streams' drafts while a long prompt is prefilled (chunks sized by measured time)."""
from __future__ import annotations

import time

import numpy as np

from tests.integration.test_server import K
from vllm_ssd import protocol as P
from vllm_ssd.client import ServerConnection
from vllm_ssd.client.deadline import MIN_REPLIES, step_deadline_s
from vllm_ssd.settings import SSDSettings
from vllm_ssd.client.stats_reader import read_server_stats

LONG_PROMPT = 2000


def start(tiny, tmp_path, **extra) -> ServerConnection:
    settings = SSDSettings(draft_model=str(tiny["target"]), draft_device="cpu", mode="ssd",
                           build_plan="full", build_deadline=float("inf"), backup="neural",
                           log_interval_s=0, runtime_dir=str(tmp_path), **extra)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                    target_vocab_size=512, max_model_len=2400, max_num_seqs=4)
    client = ServerConnection(settings, hello)
    client.start(wait=True)
    return client


def send(client, rows: dict[int, list[int]], new: dict[int, bool]) -> tuple[dict, float]:
    """One step for ``rows`` (slot -> its new tokens); returns drafts by slot and the wait."""
    slots = list(rows)
    request = P.StepRequest(
        seq=0, new_requests=[P.NewRequest(slot=s, temperature=0.0) for s in slots if new[s]],
        finished_slots=[], slots=P.pack(slots), num_new_tokens=P.pack([len(rows[s]) for s in slots]),
        new_tokens=P.pack([t for s in slots for t in rows[s]]),
        is_step_delta=P.pack([not new[s] for s in slots], np.uint8),
        max_drafts=P.pack([K] * len(slots)))
    start_s = time.perf_counter()
    reply = client.step(request)
    waited = time.perf_counter() - start_s
    lens = P.unpack(reply.num_drafts)
    return dict(zip(slots, lens.tolist())), waited


def test_statistics_are_answered_while_a_build_runs(tiny, tmp_path):
    client = start(tiny, tmp_path, sim_ms_per_token=100.0)  # a 10-token glue pass: 1 s
    try:
        send(client, {0: list(range(4, 14))}, {0: True})  # the build prefills 10 tokens
        time.sleep(0.2)
        began = time.perf_counter()
        readings = read_server_stats(str(tmp_path), timeout_s=2.0)
        waited = time.perf_counter() - began
        assert list(readings.values())[0]["steps"] >= 0 and waited < 0.2
    finally:
        client.close()


def test_a_long_prompt_joining_pauses_no_other_streams_drafts(tiny, tmp_path):
    """While slot 1's 2,000-token prompt is prefilled, slot 0 gets drafts at every step
    and no reply takes longer than the step deadline measured before it joined."""
    client = start(tiny, tmp_path, sim_ms_per_token=1.0)  # a 256-token chunk: 0.26 s
    rng = np.random.default_rng(0)
    try:
        send(client, {0: [1, 40, 41, 42, 43, 44, 45]}, {0: True})
        alone = [send(client, {0: [50 + i]}, {0: False})[1] for i in range(MIN_REPLIES)]
        deadline_s = step_deadline_s(np.array(alone), target_step_s=0.0)
        long_prompt = rng.integers(4, 500, size=LONG_PROMPT).tolist()
        send(client, {0: [60], 1: long_prompt}, {0: False, 1: True})
        waits, caught_up_at = [], None
        for i in range(200):
            drafts, waited = send(client, {0: [70 + i % 50], 1: [80 + i % 50]},
                                  {0: False, 1: False})
            assert drafts[0] > 0, f"step {i}: the running stream got no drafts"
            if drafts[1] > 0:  # slot 1 caught up: this reply also ran its first build
                caught_up_at = i
                break
            waits.append(waited)
        assert caught_up_at is not None and caught_up_at >= 5  # prefilled over many rounds
        assert max(waits) <= deadline_s, \
            f"deadline {deadline_s:.3f} s, replies {np.round(waits, 3).tolist()}"
    finally:
        client.close()
