"""A draft server that hangs (SIGSTOP) or is sent hostile frames never stalls serving and
never changes an output: a stopped server costs one step deadline, then the engine
decodes without drafts until it answers again (or, silent for ipc_timeout_s, is
replaced); fuzzed frames from another peer are dropped without a restart."""
from __future__ import annotations

import glob
import os
import signal
import threading
import time

import numpy as np
import pytest
import zmq
from vllm import SamplingParams

from tests.conftest import PROMPTS, greedy, make_llm, ssd_config, token_ids
from tests.e2e.test_failure_and_lifecycle import draft_servers
from tests.fuzz_frames import fuzz_frames
from vllm_ssd import get_ssd_metrics
from vllm_ssd import protocol as P

MAX_TOKENS = 120
LONG_MAX_TOKENS = 400  # streams that outlast ipc_timeout_s after the stop
MAX_GAP_S = 2.0  # the longest pause between two tokens of a stream
MAX_STALL_S = 1.5  # the longest a step waits on the draft server (the deadline is <= 1 s)


@pytest.fixture
def proposer_stalls(monkeypatch) -> list[float]:
    """Seconds each SSDProposer.propose call took: how long a step waited on SSD."""
    from vllm_ssd.vllm_seam.proposer import SSDProposer

    stalls: list[float] = []
    propose = SSDProposer.propose

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return propose(self, *args, **kwargs)
        finally:
            stalls.append(time.perf_counter() - start)
    monkeypatch.setattr(SSDProposer, "propose", timed)
    return stalls


def stream_with_gaps(engine, stop_server_at: int, resume_server_at: int = -1,
                     max_tokens: int = MAX_TOKENS) -> tuple[dict[str, list[int]], float, int]:
    """Runs PROMPTS to the end; SIGSTOPs the draft server after ``stop_server_at`` steps
    (SIGCONT after ``resume_server_at``, if given). Returns the token ids by request, the
    longest gap between two tokens of one request, and the stopped server's pid."""
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(f"r{i}", prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens,
                                                           ignore_eos=True))
    outputs: dict[str, list[int]] = {}
    last_token_at: dict[str, float] = {}
    longest, stopped, step = 0.0, 0, 0
    while engine.has_unfinished_requests():
        if step == stop_server_at:
            (server,) = draft_servers()
            stopped = server.pid
            server.send_signal(signal.SIGSTOP)
        if step == resume_server_at:
            os.kill(stopped, signal.SIGCONT)
        for out in engine.step():
            now = time.monotonic()
            tokens = list(out.outputs[0].token_ids)
            if len(tokens) > len(outputs.get(out.request_id, [])):
                if out.request_id in last_token_at:
                    longest = max(longest, now - last_token_at[out.request_id])
                last_token_at[out.request_id] = now
            outputs[out.request_id] = tokens
        step += 1
    return outputs, longest, stopped


def by_request(outputs: dict[str, list[int]]) -> list[list[int]]:
    return [outputs[f"r{i}"] for i in range(len(PROMPTS))]


def test_a_stopped_draft_server_stalls_no_stream(tiny, reference_outputs, proposer_stalls):
    """Stopped for 50 steps mid-generation, then continued: the late reply is dropped, the
    server is resynchronised and drafts again, within the same streams."""
    expected = reference_outputs(MAX_TOKENS)
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0, ipc_timeout_s=600)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs, longest, stopped = stream_with_gaps(llm.llm_engine, stop_server_at=8,
                                                     resume_server_at=58)
        first = get_ssd_metrics(llm)
        again = token_ids(llm.generate(PROMPTS, greedy(MAX_TOKENS), use_tqdm=False))
        second = get_ssd_metrics(llm)
        servers = [p.pid for p in draft_servers()]
    assert by_request(outputs) == expected and again == expected
    assert longest <= MAX_GAP_S and max(proposer_stalls) <= MAX_STALL_S
    assert servers == [stopped] and second["restarts"] == 0
    assert first["deadline_misses"] >= 1  # the proposer's count, sent with its next step
    assert second["drafted_tokens"] > first["drafted_tokens"]


def test_a_server_silent_for_ipc_timeout_is_replaced_without_a_stall(tiny, reference_outputs,
                                                                    proposer_stalls):
    """Stopped for good: after ipc_timeout_s of silence it is killed (without waiting) and
    a replacement starts while the streams go on."""
    expected = reference_outputs(LONG_MAX_TOKENS)
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0, ipc_timeout_s=1.0,
                        step_deadline_ms=300)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs, longest, stopped = stream_with_gaps(llm.llm_engine, stop_server_at=8,
                                                     max_tokens=LONG_MAX_TOKENS)
        time.sleep(0.5)  # the reaper thread collects the killed server
        assert stopped not in [p.pid for p in draft_servers()]  # killed while streams ran
        deadline = time.monotonic() + 120  # the replacement counts the restart once it is up
        while True:
            again = token_ids(llm.generate(PROMPTS, greedy(LONG_MAX_TOKENS), use_tqdm=False))
            stats = get_ssd_metrics(llm)
            if stats.get("restarts", 0) >= 1 or time.monotonic() > deadline:
                break
        servers = [p.pid for p in draft_servers()]
    assert by_request(outputs) == expected and again == expected
    assert longest <= MAX_GAP_S and max(proposer_stalls) <= MAX_STALL_S
    assert servers and stopped not in servers and stats["restarts"] >= 1


def send_fuzz(runtime_dir: str, frames: list[list[bytes]], sent: list[int]) -> None:
    """Connects as another peer (several sockets, one per 100 frames) and sends frames."""
    (address,) = glob.glob(os.path.join(runtime_dir, "draft-*.addr"))
    path = open(address).read().split("\n")[0]
    context = zmq.Context()
    try:
        for start in range(0, len(frames), 100):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(f"ipc://{path}")
            for parts in frames[start:start + 100]:
                sock.send_multipart(parts)
                sent[0] += 1
            time.sleep(0.01)
            sock.close()
    finally:
        context.term()


def test_fuzzed_frames_from_another_peer_neither_stop_the_server_nor_change_output(
        tiny, reference_outputs):
    expected = reference_outputs(MAX_TOKENS)
    frames = fuzz_frames(np.random.default_rng(1), 1200, max_slots=8, vocab=512,
                         oversized_bytes=4 << 20)
    frames.insert(600, [P.encode(P.Shutdown())])  # a Shutdown from the second peer
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        runtime_dir = llm.llm_engine.vllm_config.additional_config["vllm_ssd"]["runtime_dir"]
        (server,) = draft_servers()
        sent = [0]
        fuzzer = threading.Thread(target=send_fuzz, args=(runtime_dir, frames, sent), daemon=True)
        fuzzer.start()
        outputs = token_ids(llm.generate(PROMPTS, greedy(MAX_TOKENS), use_tqdm=False))
        fuzzer.join(timeout=120)
        deadline = time.monotonic() + 30
        while get_ssd_metrics(llm).get("foreign_frames", 0) < len(frames) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        stats = get_ssd_metrics(llm)
        servers = [p.pid for p in draft_servers()]
    assert sent[0] == len(frames) >= 1000
    assert outputs == expected
    assert servers == [server.pid] and stats["restarts"] == 0
    assert stats["foreign_frames"] == stats["rejected_frames"] == len(frames)
