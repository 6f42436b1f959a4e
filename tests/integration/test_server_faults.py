"""The draft server under bad input: frames from its own proposer's socket and from other
peers that are malformed, inconsistent, replayed or hostile are dropped and counted, the
server keeps serving exact drafts; a server that hangs in start-up is killed; the token
is never left readable."""
from __future__ import annotations

import os
import signal
import stat
import time

import numpy as np
import zmq

from tests.fuzz_frames import fuzz_frames
from tests.integration.test_server import (K, PROMPT, hf_greedy, make_hello,  # noqa: F401
                                           start_client, step)
from vllm_ssd import protocol as P
from vllm_ssd.client import ServerConnection
from vllm_ssd.settings import SSDSettings

OVERSIZED = 2 << 20


def foreign_socket(client: ServerConnection) -> zmq.Socket:
    sock = client.context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{client.server.socket_path}")
    return sock


def wait_for_rejections(client: ServerConnection, count: int, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = client.stats()
        if stats["rejected_frames"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_fuzzed_frames_from_the_proposer_socket_and_other_peers_change_nothing(tiny, start_client):
    client = start_client(mode="sd")
    truth = hf_greedy(tiny["target"], PROMPT, 16)
    rng = np.random.default_rng(0)
    drafts, _ = step(client, 0, PROMPT + truth[:1], is_step=False, new=True)
    assert drafts == truth[1:1 + K]
    step(client, 0, truth[1:2], is_step=True)  # two steps in: seqs 0 and 1 are the past
    keyed_stats = [P.encode(P.StatsRequest(key="guessed"))]  # answered on the proposer's socket
    own = [parts for parts in fuzz_frames(rng, 600, max_slots=4, vocab=512,
                                          oversized_bytes=OVERSIZED) if parts != keyed_stats]
    for parts in own:
        client.socket.send_multipart(parts)
    intruder = foreign_socket(client)
    foreign = fuzz_frames(rng, 600, max_slots=4, vocab=512, oversized_bytes=OVERSIZED)
    foreign += [[P.encode(P.Shutdown())], [P.encode(P.StatsRequest())],
                [P.encode(P.make_dummy_step(seq=10**9))]]
    for parts in foreign:
        intruder.send_multipart(parts)
    stats = wait_for_rejections(client, len(own) + len(foreign))
    intruder.close()
    assert client.server.process.poll() is None
    assert stats["rejected_frames"] == len(own) + len(foreign)
    assert stats["foreign_frames"] == len(foreign)
    assert stats["steps"] == 2  # no fuzzed step ran
    # the request's state is untouched: the next outcome drafts the true continuation
    drafts, _ = step(client, 0, truth[2:4] + truth[4:5], is_step=True)
    assert drafts == truth[5:5 + K]


def test_a_step_rejected_from_the_proposer_socket_is_answered_with_an_error(start_client):
    client = start_client(mode="sd")
    step(client, 0, PROMPT, is_step=False, new=True)
    replayed = P.make_dummy_step(seq=0)
    client.socket.send(P.encode(replayed))
    reply = P.decode(client.socket.recv()) if client.socket.poll(30_000) else None
    assert isinstance(reply, P.ErrorReply) and "seq 0 is not after" in reply.error
    assert client.server.process.poll() is None


def test_the_token_reaches_the_server_only_through_a_pipe(start_client, monkeypatch):
    import secrets

    issued: list[str] = []
    real_token_hex = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n=16: issued.append(real_token_hex(n)) or issued[-1])
    client = start_client(mode="sd")
    pid = client.pid
    with open(f"/proc/{pid}/environ", "rb") as handle:
        environ = handle.read()
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        cmdline = handle.read()
    token = issued[-2]  # start() draws the token, then the stats key
    assert token.encode() not in environ and token.encode() not in cmdline
    address_file = client.address_file
    assert token not in open(address_file).read()
    assert stat.S_IMODE(os.stat(address_file).st_mode) == 0o600
    assert not os.path.exists(f"/proc/{pid}/fd/0") or os.readlink(f"/proc/{pid}/fd/0") != \
        os.readlink(f"/proc/{os.getpid()}/fd/0")


def test_a_server_that_hangs_in_start_up_is_killed(tiny, tmp_path):
    settings = SSDSettings(draft_model=str(tiny["target"]), draft_device="cpu", log_interval_s=0,
                           startup_timeout_s=1.0, runtime_dir=str(tmp_path))
    client = ServerConnection(settings, make_hello())
    try:
        client.start(wait=False)
        process = client.server.process
        os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        while client.ready() is False and client.server is not None:
            assert time.monotonic() - started < 20
            time.sleep(0.05)
        assert client.server is None and not client.ready()
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        client.close()
