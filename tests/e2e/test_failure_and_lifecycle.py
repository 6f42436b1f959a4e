"""Draft-server crashes never lose a request; requests joining, finishing, aborting and
being preempted keep the output exact; shutdown leaves nothing behind."""
from __future__ import annotations

import gc
import os
import signal
import threading
import time

import psutil
from vllm import SamplingParams

from tests.conftest import PROMPTS, greedy, make_llm, ssd_config, token_ids
from vllm_ssd import get_ssd_metrics


def draft_servers() -> list[psutil.Process]:
    me = psutil.Process(os.getpid())
    return [p for p in me.children(recursive=True)
            if any("vllm_ssd.server" in part for part in p.cmdline())]


def kill_server_after(llm, steps: int, killed: list[int]) -> threading.Thread:
    """SIGKILLs the draft server once it has served ``steps`` steps; ``killed`` gets its
    pids, then the kill's ``time.monotonic()``."""
    def run():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get_ssd_metrics(llm).get("steps", 0) >= steps:
                    break
            except Exception:
                pass
            time.sleep(0.005)
        for proc in draft_servers():
            killed.append(proc.pid)
            proc.send_signal(signal.SIGKILL)
        killed.append(time.monotonic())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def generate_with_server_killed(llm, max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Greedy outputs of PROMPTS while the draft server is killed after 5 steps, and the
    killed pids; fails unless the kill landed mid-generation (the restart it causes is
    counted once the replacement server runs: callers check it after a second batch)."""
    killed: list = []
    thread = kill_server_after(llm, steps=5, killed=killed)
    outputs = token_ids(llm.generate(PROMPTS, greedy(max_tokens), use_tqdm=False))
    finished = time.monotonic()
    thread.join()
    *pids, killed_at = killed
    assert pids, "the draft server was not found"
    assert killed_at < finished, "the kill landed after the generation"
    return outputs, pids


def test_killing_the_draft_server_loses_nothing(tiny, reference_outputs):
    expected = reference_outputs(200)
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs, killed = generate_with_server_killed(llm, 200)
        assert outputs == expected
        # the server came back: a second batch speculates again, still exactly
        again = token_ids(llm.generate(PROMPTS, greedy(200), use_tqdm=False))
        stats = get_ssd_metrics(llm)
        servers = [p.pid for p in draft_servers()]
    assert again == expected
    assert stats["restarts"] >= 1 and stats["drafted_tokens"] > 0
    assert servers and not set(servers) & set(killed)


def test_shutdown_leaves_no_process_or_socket(tiny):
    config = ssd_config(tiny["draft"], log_interval_s=0)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        llm.generate(PROMPTS[:2], greedy(8), use_tqdm=False)
        runtime_dir = llm.llm_engine.vllm_config.additional_config["vllm_ssd"]["runtime_dir"]
        servers = draft_servers()
        assert len(servers) == 1 and os.listdir(runtime_dir)
    del llm
    gc.collect()
    psutil.wait_procs(servers, timeout=10)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers)
    assert not os.path.exists(runtime_dir) or os.listdir(runtime_dir) == []


def test_requests_join_finish_and_abort_mid_stream(tiny):
    lengths = [40, 7, 64, 3, 25, 50, 12, 33, 64, 9]
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in lengths]
    with make_llm(tiny["target"]) as llm:
        expected = token_ids(llm.generate(PROMPTS, params, use_tqdm=False))
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0)
    with make_llm(tiny["target"], speculative_config=config, max_num_seqs=4) as llm:
        fresh = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in lengths]
        outputs = _stream(llm.llm_engine, PROMPTS, fresh, aborted={"r2", "r5"})
    assert 0 < len(outputs["r2"]) < lengths[2] and 0 < len(outputs["r5"]) < lengths[5]
    for i, want in enumerate(expected):
        if f"r{i}" in ("r2", "r5"):
            assert outputs[f"r{i}"] == want[:len(outputs[f"r{i}"])]  # a prefix, then stopped
        else:
            assert outputs[f"r{i}"] == want


def _stream(engine, prompts, params, aborted: set[str]) -> dict[str, list[int]]:
    """Adds a request every other step, aborts some at step 12, returns token ids
    (``params`` must be fresh: ``LLM.generate`` switches them to final-only output)."""
    pending = list(enumerate(zip(prompts, params)))
    outputs: dict[str, list[int]] = {}
    step = 0
    while pending or engine.has_unfinished_requests():
        if pending and step % 2 == 0:
            i, (prompt, param) = pending.pop(0)
            engine.add_request(f"r{i}", prompt, param)
        if step == 12:
            engine.abort_request(sorted(aborted))
        for out in engine.step():
            outputs[out.request_id] = list(out.outputs[0].token_ids)
        step += 1
    return outputs


def test_preemption_keeps_output_exact(tiny):
    params = SamplingParams(temperature=0.0, max_tokens=100, ignore_eos=True)
    small_kv = dict(max_model_len=256, num_gpu_blocks_override=12, block_size=32)
    with make_llm(tiny["target"], **small_kv) as llm:
        expected = token_ids(llm.generate(PROMPTS[:8], params, use_tqdm=False))
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0)
    with make_llm(tiny["target"], speculative_config=config, **small_kv) as llm:
        outputs = token_ids(llm.generate(PROMPTS[:8], params, use_tqdm=False))
        preemptions = sum(m.value for m in llm.get_metrics() if m.name == "vllm:num_preemptions")
    assert preemptions > 0
    assert outputs == expected
