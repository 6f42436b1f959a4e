"""Where speculation cannot pay (a draft much slower than the target), the engine says so,
stands aside for good, stops its draft server (the counters stay readable) and the target
gets the draft's core; output stays the target's."""
from __future__ import annotations

import os

import psutil

from tests.conftest import PROMPTS, greedy, make_llm, ssd_config, token_ids
from tests.e2e.test_failure_and_lifecycle import draft_servers
from vllm_ssd import get_ssd_metrics


def metric_values(llm) -> dict[str, float]:
    return {m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}


def test_a_draft_that_cannot_pay_stands_aside_and_frees_its_core(tiny, reference_outputs,
                                                                    caplog):
    saved = os.sched_getaffinity(0)
    target_cpu, draft_cpu = min(saved), max(saved)  # CI machines have two cores at least
    os.sched_setaffinity(0, {target_cpu})  # this thread runs the in-process engine
    config = ssd_config(tiny["draft_noisy"], log_interval_s=0, draft_cpus=str(draft_cpu),
                        sim_ms_per_token=2.0)  # each draft token costs 2 ms more
    try:
        with make_llm(tiny["target"], speculative_config=config) as llm:
            outputs = token_ids(llm.generate(PROMPTS, greedy(64), use_tqdm=False))
            metrics = get_ssd_metrics(llm)
            servers_left = [p for p in draft_servers()
                            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            widened = os.sched_getaffinity(0)
            drafted = metric_values(llm)["vllm:spec_decode_num_draft_tokens"]
            llm.generate(PROMPTS[:4], greedy(16), use_tqdm=False)
            drafted_after = metric_values(llm)["vllm:spec_decode_num_draft_tokens"]
    finally:
        os.sched_setaffinity(0, saved)
    assert outputs == reference_outputs(64)
    assert metrics["stood_aside"] == 1.0 and metrics["steps"] > 0  # kept by the client
    assert not servers_left  # the draft server stopped: its memory is free
    assert widened == {target_cpu, draft_cpu}
    assert drafted_after == drafted  # no drafts once it stood aside
    assert "stands aside for good" in caplog.text
    assert f"on CPUs [{target_cpu}, {draft_cpu}]" in caplog.text
