"""ServerConnection: the proposer's connection to its draft server process (started and
stopped through ``server_process``), the handshake, steps and statistics over it.

Local-only IPC: a ZMQ DEALER socket on ``ipc://<private dir>/draft-<pid>-<n>.sock``
(the directory is created 0700), plus a random token checked in the handshake; the
token and a read-only stats key reach the server through a pipe on its stdin, read
once. No port is ever opened. Failures (death, timeout, error reply) raise
``DraftServerUnavailable``; a step that misses its deadline raises ``StepDeadlineMissed``
(the server may still answer: ``late_reply_arrived``). The caller decides what to do
without drafts.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from itertools import count

import msgspec
import zmq

from vllm_ssd import protocol as P
from vllm_ssd.client.errors import DraftServerUnavailable, StepDeadlineMissed
from vllm_ssd.client.runtime_files import new_socket_path, write_private
from vllm_ssd.client.server_process import ServerProcess, spawn_server, stop_server
from vllm_ssd.settings import SSDSettings

logger = logging.getLogger(__name__)
POLL_SLICE_MS = 20


class ServerConnection:
    def __init__(self, settings: SSDSettings, hello: P.Hello):
        self.settings = settings
        self.hello = hello
        self.context = zmq.Context()
        self.socket: zmq.Socket | None = None
        self.server: ServerProcess | None = None
        self.reply_info: P.HelloReply | None = None
        self.sequence = count()
        self.awaiting_hello = False
        self.last_heard = 0.0  # time.monotonic() of the server's last message
        # <runtime dir>/draft-*.addr (0600), one for the client's lifetime: metrics readers
        # find the current server by it, and the restarts while none answers
        self.address_file: str | None = None
        # failed servers replaced so far, as the proposer counts them: in every handshake's
        # base (no server reports fewer) and in the address file
        self.restarts = 0
        # a retired server's last counters, published in the address file in its place
        self.final_counts: dict[str, float] = {}
        self.spawn = spawn_server  # (settings, socket path, token, stats key) -> Popen

    def start(self, wait: bool = True) -> None:
        """Spawns the server and sends the handshake; with ``wait`` blocks for its reply."""
        self.close_server()
        name, path, short_dir = new_socket_path(self.settings)
        token, stats_key = secrets.token_hex(16), secrets.token_hex(16)
        self.address_file = self.address_file or name + ".addr"
        self._publish_address(path, stats_key)
        self.server = ServerProcess(self.spawn(self.settings, path, token, stats_key), path,
                                    short_dir, started_at=time.monotonic())
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IDENTITY, secrets.token_bytes(16))
        self.socket.connect(f"ipc://{path}")
        base = self.hello.stats_base
        base = {**base, "restarts": max(base.get("restarts", 0.0), float(self.restarts))}
        self.socket.send(P.encode(msgspec.structs.replace(self.hello, token=token,
                                                          stats_base=base)))
        self.awaiting_hello = True
        if wait:
            self._finish_handshake(self.settings.startup_timeout_s)

    def _publish_address(self, path: str, stats_key: str) -> None:
        """The address file: socket path and stats key ("" while no server runs), then one
        ``name value`` line per counter the client keeps (restarts, a retired server's)."""
        counts = {**self.final_counts,
                  "restarts": max(float(self.restarts), self.final_counts.get("restarts", 0.0))}
        lines = "".join(f"{name} {value!r}\n" for name, value in counts.items())
        try:
            if self.address_file:
                write_private(self.address_file, f"{path}\n{stats_key}\n{lines}")
        except OSError as error:  # metrics only: never a reason to fail a step
            logger.warning("vllm_ssd: cannot write %s: %s", self.address_file, error)

    def ready(self) -> bool:
        """Non-blocking: completes a pending handshake if its reply has arrived; a server
        that has not answered within ``startup_timeout_s`` is killed (returns False)."""
        if not self.awaiting_hello:
            return self.server is not None
        try:
            self._finish_handshake(0.0)
            waited = time.monotonic() - self.server.started_at
            if self.awaiting_hello and waited > self.settings.startup_timeout_s:
                raise DraftServerUnavailable(f"no handshake within {waited:.0f} s")
        except DraftServerUnavailable as error:
            logger.warning("draft server restart failed: %s", error)
            self.close_server()
            return False
        return not self.awaiting_hello

    def _finish_handshake(self, timeout_s: float) -> None:
        try:
            reply = self._receive(timeout_s, allow_pending=timeout_s == 0.0)
        except _NoReply:
            self.close_server()
            raise DraftServerUnavailable(f"draft server gave no handshake in {timeout_s} s") from None
        if reply is None:
            return
        if not isinstance(reply, P.HelloReply) or not reply.ok:
            error = getattr(reply, "error", repr(reply))
            self.close_server()
            raise DraftServerUnavailable(f"draft server failed to start: {error}")
        self.reply_info = reply
        self.awaiting_hello = False

    def _require_server(self) -> None:
        if self.server is None or self.awaiting_hello:
            raise DraftServerUnavailable("draft server is not running")

    def step(self, request: P.StepRequest, deadline_s: float | None = None) -> P.StepReply:
        """Sends a step and waits for its reply: at most ``deadline_s`` (then raises
        StepDeadlineMissed; the seq is request.seq), else up to ``ipc_timeout_s``."""
        self._require_server()
        request.seq = next(self.sequence)
        self.socket.send(P.encode(request))
        timeout_s = self.settings.ipc_timeout_s if deadline_s is None else deadline_s
        end = time.monotonic() + timeout_s
        while True:
            try:
                reply = self._receive(max(end - time.monotonic(), 0.0), allow_pending=False)
            except _NoReply:
                if deadline_s is None:
                    raise DraftServerUnavailable(f"no reply from the draft server in {timeout_s} s")
                raise StepDeadlineMissed(f"no reply to step {request.seq} in "
                                         f"{1e3 * timeout_s:.0f} ms") from None
            if _answers(reply, request.seq):
                return _checked(reply)

    def late_reply_arrived(self, seq: int) -> bool:
        """Non-blocking: drains what the server sent; True once the reply to step ``seq``
        (which missed its deadline) is among it. The reply itself is dropped."""
        self._require_server()
        while (reply := self._receive(0.0, allow_pending=True)) is not None:
            if _answers(reply, seq):
                return True
        return False

    def notify(self, request: P.StepRequest) -> None:
        """Sends a step that gets no reply (a quiet step); raises if the server is gone."""
        self._require_server()
        if self.server.process.poll() is not None:
            raise DraftServerUnavailable(
                f"draft server exited with code {self.server.process.returncode}")
        request.seq = next(self.sequence)
        request.wants_reply = False
        self.socket.send(P.encode(request))

    def stats(self, timeout_s: float = 5.0) -> dict[str, float]:
        self._require_server()
        self.socket.send(P.encode(P.StatsRequest()))
        while True:
            try:
                reply = self._receive(timeout_s, allow_pending=False)
            except _NoReply:
                raise DraftServerUnavailable(f"no stats from the draft server in {timeout_s} s") from None
            if isinstance(reply, P.StatsReply):
                return reply.stats

    def _receive(self, timeout_s: float, allow_pending: bool):
        """The server's next message; None when ``allow_pending`` and none is there; raises
        _NoReply after ``timeout_s`` and DraftServerUnavailable if the server exited."""
        if not allow_pending and (message := self._busy_poll()) is not None:
            return message
        deadline = time.monotonic() + timeout_s
        while True:
            wait_ms = 0 if allow_pending else int(max(min(POLL_SLICE_MS, 1e3 * timeout_s), 0))
            if self.socket.poll(wait_ms):
                return self._take()
            if self.server.process.poll() is not None:
                raise DraftServerUnavailable(
                    f"draft server exited with code {self.server.process.returncode}")
            if allow_pending:
                return None
            if time.monotonic() >= deadline:
                raise _NoReply()

    def _take(self):
        self.last_heard = time.monotonic()
        return P.decode(self.socket.recv())

    def _busy_poll(self):
        """The next message if it comes within ``busy_poll_ms`` (polled without sleeping:
        a blocking poll adds the wake-up of an idle thread to every round trip)."""
        end = time.perf_counter() + self.settings.busy_poll_seconds()
        while time.perf_counter() < end:
            if self.socket.poll(0):
                return self._take()
        return None

    @property
    def pid(self) -> int | None:
        return self.server.process.pid if self.server else None

    def close_server(self, graceful: bool = False) -> None:
        """Stops the server process: a Shutdown message, then (at once, or after a short
        wait when ``graceful``) SIGKILL, reaped off this thread; removes its socket (the
        address file stays, naming no server but the restarts, until ``close``)."""
        if self.socket is not None and self.server is not None:
            try:
                self.socket.send(P.encode(P.Shutdown()), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        if self.server is not None:
            stop_server(self.server, graceful)
        if self.socket is not None:
            self.socket.close()
        self.socket, self.server, self.awaiting_hello = None, None, False
        self._publish_address("", "")

    def retire(self) -> None:
        """Stops the server for good (speculation stood aside): its last counters go into the
        address file, where metrics readers find them without a server; its memory (weights,
        KV cache) and process are freed."""
        try:
            self.final_counts = dict(self.stats())
        except DraftServerUnavailable as error:
            logger.warning("vllm_ssd: the retiring draft server sent no final counters: %s", error)
        self.close_server(graceful=True)

    def close(self) -> None:
        address, self.address_file = self.address_file, None  # readers stop counting us
        if address and os.path.exists(address):
            os.unlink(address)
        self.close_server(graceful=True)
        self.context.term()


class _NoReply(Exception):
    pass


def _answers(reply, seq: int) -> bool:
    return isinstance(reply, (P.StepReply, P.ErrorReply)) and reply.seq == seq


def _checked(reply) -> P.StepReply:
    if isinstance(reply, P.ErrorReply):
        raise DraftServerUnavailable(f"draft server error: {reply.error}")
    return reply
