"""The draft server as a real process: handshake, drafting, the speculation cache,
failure detection and clean shutdown."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from vllm_ssd import protocol as P
from vllm_ssd.client import ServerConnection, DraftServerUnavailable
from vllm_ssd.settings import SSDSettings

K = 3


def hf_greedy(model_dir, prompt: list[int], steps: int) -> list[int]:
    """Plain argmax decoding with transformers (full recompute, no generation config)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(prompt):]


def step(client, slot, delta, is_step, new=False, cap=K) -> tuple[list[int], bool]:
    request = P.StepRequest(
        seq=0, new_requests=[P.NewRequest(slot=slot, temperature=0.0)] if new else [],
        finished_slots=[], slots=P.pack([slot]), num_new_tokens=P.pack([len(delta)]),
        new_tokens=P.pack(delta), is_step_delta=P.pack([is_step], np.uint8),
        max_drafts=P.pack([cap]))
    reply = client.step(request)
    return P.unpack(reply.draft_tokens).tolist(), bool(P.unpack(reply.is_hit, np.uint8)[0])


def make_hello() -> P.Hello:
    return P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                   target_vocab_size=512, max_model_len=256, max_num_seqs=4)


@pytest.fixture
def start_client(tiny, tmp_path):
    clients = []

    def start(mode="ssd", draft="target", **extra):
        settings = SSDSettings(draft_model=str(tiny[draft]), draft_device="cpu", mode=mode,
                               build_plan="full", build_deadline=float("inf"),
                               log_interval_s=0, runtime_dir=str(tmp_path), **extra)
        client = ServerConnection(settings, make_hello())
        clients.append(client)
        client.start(wait=True)
        return client
    yield start
    for client in clients:
        client.close()


PROMPT = [1, 40, 41, 42, 43, 44, 45]


def test_sd_mode_drafts_the_greedy_continuation(tiny, start_client):
    client = start_client(mode="sd")
    truth = hf_greedy(tiny["target"], PROMPT, 12)
    drafts, hit = step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    assert drafts == truth[1:1 + K] and not hit
    # the target accepted 2 drafts and sampled its own next token
    drafts, _ = step(client, 0, truth[1:3] + truth[3:4], is_step=True)
    assert drafts == truth[4:4 + K]


def test_ssd_mode_serves_drafts_from_the_cache(tiny, start_client):
    client = start_client(mode="ssd")
    truth = hf_greedy(tiny["target"], PROMPT, 16)
    drafts, hit = step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    assert drafts == [] and not hit  # the prompt is prefilled while the target works
    drafts, hit = step(client, 0, truth[1:2], is_step=True)  # k=0, t* = truth[1]
    assert hit and drafts == truth[2:2 + K]
    drafts, hit = step(client, 0, truth[2:5] + truth[5:6], is_step=True)  # all 3 accepted
    assert hit and drafts == truth[6:6 + K]
    stats = client.stats()
    assert stats["lookups"] == 2 and stats["hits"] == 2 and stats["accepted_tokens"] == 3


def test_busy_polling_server_and_client_serve_the_same_drafts(tiny, start_client):
    """busy_poll_ms (on by default with CUDA drafts): both sides poll without sleeping."""
    client = start_client(mode="ssd", busy_poll_ms=50)
    truth = hf_greedy(tiny["target"], PROMPT, 16)
    step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    drafts, hit = step(client, 0, truth[1:2], is_step=True)
    assert hit and drafts == truth[2:2 + K]
    assert client.stats()["hits"] == 1


def test_a_wrong_guess_is_a_miss_and_the_backup_drafts(tiny, start_client):
    client = start_client(mode="ssd", backup="neural")
    truth = hf_greedy(tiny["target"], PROMPT, 16)
    step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    step(client, 0, truth[1:2], is_step=True)
    # pretend the target rejected the first draft and sampled a token the draft did not expect
    drafts, hit = step(client, 0, [3], is_step=True)
    assert not hit and len(drafts) == K
    assert drafts == hf_greedy(tiny["target"], PROMPT + truth[:2] + [3], K)


def test_quiet_steps_get_no_reply_but_are_tracked(tiny, start_client):
    """Outcomes sent with notify() (speculation off) advance the server's copy of the
    request; the next awaited step drafts from the right context, with its own reply."""
    client = start_client(mode="sd")
    truth = hf_greedy(tiny["target"], PROMPT, 12)
    step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    for token in truth[1:4]:  # three plain steps: one sampled token each, no drafts
        client.notify(P.StepRequest(
            seq=0, new_requests=[], finished_slots=[], slots=P.pack([0]),
            num_new_tokens=P.pack([1]), new_tokens=P.pack([token]),
            is_step_delta=P.pack([1], np.uint8), max_drafts=P.pack([0])))
    drafts, _ = step(client, 0, truth[4:5], is_step=True)
    assert drafts == truth[5:5 + K]
    assert client.stats()["steps"] == 5
    os.kill(client.pid, signal.SIGKILL)
    client.server.process.wait(timeout=10)
    with pytest.raises(DraftServerUnavailable, match="exited"):  # a quiet step notices too
        client.notify(P.make_dummy_step())


def test_dead_server_is_detected_and_shutdown_cleans_up(start_client, tmp_path):
    client = start_client()
    pid, socket_path = client.pid, client.server.socket_path
    assert os.path.exists(socket_path)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(DraftServerUnavailable, match="exited"):
        step(client, 0, PROMPT, is_step=False, new=True)
    client.close_server()
    assert not os.path.exists(socket_path)
    client.start(wait=True)
    new_pid, new_path = client.pid, client.server.socket_path
    client.close()
    assert not os.path.exists(new_path) and _gone_within(new_pid, 5.0)
    assert list(tmp_path.iterdir()) == []


def test_start_up_failure_reports_the_cause(tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny["draft"] / "config.json").read_text())
    settings = SSDSettings(draft_model=str(broken), draft_device="cpu", log_interval_s=0,
                           runtime_dir=str(tmp_path / "run"))
    client = ServerConnection(settings, make_hello())
    with pytest.raises(DraftServerUnavailable, match="safetensors"):
        client.start(wait=True)
    client.close()


def _gone_within(pid: int, seconds: float) -> bool:
    """The process exits (or its SIGKILL lands) within ``seconds``: close() does not wait
    for a killed server's reaping."""
    import time

    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"


def test_the_server_runs_the_proposers_package_whatever_the_working_directory(
        start_client, tmp_path, monkeypatch):
    """A vllm_ssd in the working directory (another checkout) must not replace the
    proposer's own package in the server process."""
    shadow = tmp_path / "elsewhere" / "vllm_ssd"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("the shadow package was imported")')
    monkeypatch.chdir(shadow.parent)
    client = start_client(mode="sd", startup_timeout_s=60)
    drafts, _ = step(client, 0, list(range(5, 25)), False, new=True)
    assert len(drafts) == K
