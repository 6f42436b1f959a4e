"""Every replacement of a failed draft server is counted by ``get_ssd_metrics`` (and
/metrics, which reads the same way), whatever the order of the kill, the next statistics
read and the replacement's first reply.

The order that read 0 restarts on a GPU: the server is killed mid-generation, the
proposer replaces it, and the replacement (a GPU server takes seconds to load) has not
answered yet when the statistics are read; the batches finish without drafts meanwhile.
Here the proposer and its ServerConnection are real; each "server" is a sleeping process,
played on its socket by a stand-in thread (a real ``ServerStats`` restored from the
handshake's base) once the test lets it answer.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
import types

import numpy as np
import pytest
import zmq

from tests.unit.test_proposer_quiet import make_proposer
from vllm_ssd import protocol as P
from vllm_ssd.client import ServerConnection
from vllm_ssd.server.stats import ServerStats
from vllm_ssd.settings import ADDITIONAL_CONFIG_KEY, SSDSettings
from vllm_ssd.client.stats_reader import read_server_stats
from vllm_ssd.vllm_seam.metrics import SSDMetricsCollector, get_ssd_metrics

K = 4
TOKENS = np.zeros((1, 64), dtype=np.int32)


class StandInServer:
    """Answers the handshake, steps (no drafts; the counters when asked) and statistics
    requests of any peer on ``path`` (none before the handshake, as a real server)."""

    def __init__(self, path: str, loaded: bool):
        self.hello: P.Hello | None = None
        self.stats: ServerStats | None = None
        self.stopped, bound = threading.Event(), threading.Event()
        self.loaded = threading.Event()  # until set: bound, loading, reading nothing
        if loaded:
            self.loaded.set()
        self.thread = threading.Thread(target=self._serve, args=(path, bound), daemon=True)
        self.thread.start()
        assert bound.wait(5)

    def _serve(self, path: str, bound: threading.Event) -> None:
        socket = zmq.Context.instance().socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(f"ipc://{path}")
        bound.set()
        try:
            while not self.stopped.is_set():
                if not self.loaded.is_set():
                    time.sleep(0.005)
                elif socket.poll(10):
                    identity, payload = socket.recv_multipart()
                    reply = self._answer(P.decode(payload))
                    if reply is not None:
                        socket.send_multipart([identity, P.encode(reply)])
        finally:
            socket.close()

    def _answer(self, message):
        if isinstance(message, P.Hello):
            self.hello, self.stats = message, ServerStats(K, base=message.stats_base)
            return P.HelloReply(version=P.PROTOCOL_VERSION, ok=True, device="cpu")
        if self.stats is None:
            return None
        if isinstance(message, P.StatsRequest):
            return P.StatsReply(stats=self.stats.snapshot())
        if isinstance(message, P.StepRequest) and message.wants_reply:
            self.stats.scalars["steps"] += 1
            rows = len(P.unpack(message.slots))
            return P.StepReply(seq=message.seq, num_drafts=P.pack(np.zeros(rows)),
                               draft_tokens=P.pack(np.zeros(0)),
                               is_hit=P.pack(np.zeros(rows), np.uint8),
                               stats=self.stats.snapshot() if message.wants_stats else {})
        return None

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


class ServerLauncher:
    """Replaces ``ServerConnection.spawn``: every server is a sleeping process whose socket a
    stand-in binds at once (as a real server does); while ``answering`` it answers at
    once, else it is still loading (``answer`` lets the latest one answer)."""

    def __init__(self):
        self.answering = True
        self.spawned: list[tuple[subprocess.Popen, str]] = []
        self.stand_ins: list[StandInServer] = []

    def spawn(self, settings, path: str, token: str, stats_key: str) -> subprocess.Popen:
        process = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        self.spawned.append((process, path))
        self.stand_ins.append(StandInServer(path, loaded=self.answering))
        return process

    def answer(self) -> None:
        self.stand_ins[-1].loaded.set()

    def kill_latest(self) -> None:
        """SIGKILL, as the tests on vLLM do: the server vanishes mid-generation."""
        process, _ = self.spawned[-1]
        process.kill()
        process.wait()
        for stand_in in self.stand_ins:
            stand_in.stop()


@pytest.fixture
def engine(tmp_path):
    """(proposer with a started server, launcher, an LLM-like object for get_ssd_metrics)."""
    settings = SSDSettings(draft_device="cpu", draft_cpus="1", runtime_dir=str(tmp_path),
                           step_deadline_ms=5000.0, log_interval_s=0)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                    target_vocab_size=512, max_model_len=512, max_num_seqs=4)
    launcher = ServerLauncher()
    client = ServerConnection(settings, hello)
    client.spawn = launcher.spawn
    proposer = make_proposer(client)
    proposer.settings, proposer.hello = settings, hello
    client.start(wait=True)
    config = types.SimpleNamespace(additional_config={
        ADDITIONAL_CONFIG_KEY: {"runtime_dir": str(tmp_path)}})
    llm = types.SimpleNamespace(llm_engine=types.SimpleNamespace(vllm_config=config))
    yield proposer, launcher, llm
    launcher.kill_latest()
    client.close()


def run_steps(proposer, first: int, count: int) -> None:
    for i in range(first, first + count):
        proposer.propose([[7]], np.array([4 + i]), TOKENS)


def await_handshake(client: ServerConnection, timeout_s: float = 5.0) -> None:
    """Lets the stand-in's thread answer (the test's steps take no time, vLLM's do)."""
    end = time.monotonic() + timeout_s
    while not client.ready():
        assert time.monotonic() < end, "the replacement never answered its handshake"
        time.sleep(0.005)


def test_a_restart_counts_while_the_replacement_is_still_starting(engine):
    """The GPU order: kill, replacement spawned, statistics read, its first reply."""
    proposer, launcher, llm = engine
    run_steps(proposer, 0, 5)  # the first reply brought the counters: 0 restarts
    assert get_ssd_metrics(llm)["restarts"] == 0
    launcher.answering = False
    launcher.kill_latest()
    run_steps(proposer, 5, 1)  # the step finds the server gone: it is replaced
    run_steps(proposer, 6, 3)  # the replacement is spawned, loads, and has not answered
    assert len(launcher.spawned) == 2 and not proposer.client.ready()
    assert get_ssd_metrics(llm)["restarts"] == 1
    launcher.answer()
    await_handshake(proposer.client)
    run_steps(proposer, 9, 3)  # the replacement answers the steps
    assert launcher.stand_ins[-1].hello.stats_base["restarts"] == 1
    assert get_ssd_metrics(llm)["restarts"] == 1


def test_a_restart_counts_before_the_replacement_is_spawned(engine):
    """Read by get_ssd_metrics and by a /metrics scrape that never saw the old server."""
    proposer, launcher, llm = engine
    run_steps(proposer, 0, 5)
    launcher.kill_latest()
    run_steps(proposer, 5, 1)  # found gone; the next step would spawn the replacement
    assert len(launcher.spawned) == 1
    assert get_ssd_metrics(llm).get("restarts") == 1
    runtime_dir = llm.llm_engine.vllm_config.additional_config[ADDITIONAL_CONFIG_KEY]["runtime_dir"]
    collector = SSDMetricsCollector(read=lambda: read_server_stats(runtime_dir, timeout_s=0.2))
    scraped = {sample.name: sample.value for family in collector.collect()
               for sample in family.samples}
    assert scraped["vllm:ssd_server_restarts_total"] == 1


def test_every_replacement_counts_and_is_logged(engine, caplog):
    """Two failures in a row, the second before the first replacement sent counters: the
    third server starts from both, the reader and the log line count both."""
    proposer, launcher, llm = engine
    run_steps(proposer, 0, 5)
    for first in (5, 10):
        launcher.kill_latest()
        with caplog.at_level(logging.WARNING, logger="vllm_ssd.vllm_seam.proposer"):
            run_steps(proposer, first, 2)  # found gone, its replacement spawned
        await_handshake(proposer.client)
        run_steps(proposer, first + 2, 3)  # the replacement answers the steps
    assert len(launcher.spawned) == 3 and proposer.client.ready()
    assert launcher.stand_ins[-1].hello.stats_base["restarts"] == 2
    assert get_ssd_metrics(llm)["restarts"] == 2
    assert "restart 2" in caplog.text


def test_a_retired_servers_counters_stay_readable_without_it(engine):
    """Speculation stood aside: the server stops, its last counters stay for the readers."""
    proposer, launcher, llm = engine
    run_steps(proposer, 0, 5)
    process, _ = launcher.spawned[-1]
    proposer.client.retire()
    assert proposer.client.server is None
    assert process.wait(timeout=10) is not None  # the server process is gone
    launcher.stand_ins[-1].stop()  # nobody answers at its socket any more
    metrics = get_ssd_metrics(llm)
    assert metrics["steps"] == 5 and metrics["restarts"] == 0
    runtime_dir = llm.llm_engine.vllm_config.additional_config[ADDITIONAL_CONFIG_KEY]["runtime_dir"]
    collector = SSDMetricsCollector(read=lambda: read_server_stats(runtime_dir, timeout_s=0.2))
    assert {s.name: s.value for f in collector.collect() for s in f.samples}[
        "vllm:ssd_server_restarts_total"] == 0
