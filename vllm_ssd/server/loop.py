"""The draft server's loop: receive -> admit (``FrameGuard``) -> dispatch on message
type -> reply. A step is checked against the request table just before it runs
(``step_problem``); a rejected one leaves every state untouched.

After replying to a step it builds the next round's speculation cache, polling
the socket between forward passes: a new step stops the build (what was decoded so far
stays usable). Statistics requests are answered by a responder thread every
``RESPONDER_PERIOD_S`` while the loop is busy (a forward pass releases the GIL), so a
reader never waits behind a build or a prefill for long: the thread steps in only once the
loop has not polled for ``RESPONDER_GRACE_S`` and the last step's statistics are recorded
(a quick loop answers in order itself). Every socket call holds ``socket_lock``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import zmq

from vllm_ssd import protocol as P
from vllm_ssd.server.engine import StepEngine
from vllm_ssd.server.frame_guard import FrameGuard, StepLimits, step_problem

logger = logging.getLogger(__name__)
RESPONDER_PERIOD_S = 0.02  # the responder thread's poll period
RESPONDER_GRACE_S = 0.05  # the loop busy this long (no poll): the responder answers
IDLE_POLL_MS = 50  # the loop's blocking poll, in slices that let the responder in


class ServerLoop:
    def __init__(self, socket: zmq.Socket, engine: StepEngine, guard: FrameGuard,
                 limits: StepLimits, parent_pid: int, busy_poll_s: float = 0.0):
        """guard: bound to the proposer's identity; busy_poll_s: after a step's build, poll
        without sleeping this long for the next step (no wake-up latency on the hit path;
        the server's core stays busy)."""
        self.socket = socket
        self.engine = engine
        self.guard = guard
        self.limits = limits
        self.last_seq = -1
        self.parent_pid = parent_pid
        self.busy_poll_s = busy_poll_s
        self.queue: deque[tuple[bytes, P.Message]] = deque()
        self.socket_lock = threading.RLock()  # _receive_one answers stats inside
        self.stopped = threading.Event()
        self.last_poll = time.monotonic()  # the loop's last look at the socket

    def serve(self) -> None:
        responder = threading.Thread(target=self._respond_while_busy, name="ssd-stats",
                                     daemon=True)
        responder.start()
        try:
            self._serve()
        finally:
            self.stopped.set()
            responder.join()

    def _respond_while_busy(self) -> None:
        """Drains the socket every RESPONDER_PERIOD_S: statistics requests are answered
        here, everything else is queued for the loop."""
        while not self.stopped.wait(RESPONDER_PERIOD_S):
            if time.monotonic() - self.last_poll < RESPONDER_GRACE_S or \
                    self.engine.observations:  # the last step's counts are not in yet
                continue
            if self.socket_lock.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    self.socket_lock.release()

    def _serve(self) -> None:
        while True:
            item = self._next(timeout_ms=1000)
            if item is None:
                if not _alive(self.parent_pid):
                    logger.info("parent process %d is gone; draft server exits", self.parent_pid)
                    return
                continue
            identity, message = item
            if isinstance(message, P.Shutdown):
                return
            if isinstance(message, P.StepRequest):
                self._step(identity, message)

    def _step(self, identity: bytes, request: P.StepRequest) -> None:
        table = self.engine.table
        problem = step_problem(request, self.limits, table.active, table.num_tokens, self.last_seq)
        if problem is not None:
            self.guard.reject("inconsistent step: %s", problem)
            if request.wants_reply:
                self._send(identity, P.ErrorReply(seq=request.seq, error=f"rejected: {problem}"))
            return
        self.last_seq = request.seq
        self.engine.stats.observe_deadline_misses(request.deadline_misses)
        try:
            reply = self.engine.step(request)
        except Exception as error:  # report, the client falls back and restarts us
            logger.exception("draft step failed")
            self._send(identity, P.ErrorReply(seq=request.seq, error=repr(error)))
            raise
        if request.wants_reply:
            self._send(identity, reply)
        self.engine.build(stop=self._step_waiting)
        end = time.perf_counter() + self.busy_poll_s
        while not self.queue and time.perf_counter() < end:
            self._step_waiting()

    def _next(self, timeout_ms: int):
        end = time.monotonic() + timeout_ms / 1e3
        while not self.queue:
            with self.socket_lock:
                if self.socket.poll(min(timeout_ms, IDLE_POLL_MS)):
                    self._receive_one()
                self.last_poll = time.monotonic()
            if not self.queue and time.monotonic() >= end:
                return None
        return self.queue.popleft()

    def _step_waiting(self) -> bool:
        with self.socket_lock:
            self._drain()
            self.last_poll = time.monotonic()
        return bool(self.queue)

    def _drain(self) -> None:
        while self.socket.poll(0):
            self._receive_one()

    def _receive_one(self) -> None:
        admitted = self.guard.admit(self.socket.recv_multipart())
        if admitted is None:
            return
        identity, message = admitted
        if isinstance(message, P.StatsRequest):
            self._send(identity, P.StatsReply(stats=self.engine.stats.snapshot()))
        else:
            self.queue.append((identity, message))

    def _send(self, identity: bytes, message: P.Message) -> None:
        with self.socket_lock:
            self.socket.send_multipart([identity, P.encode(message)])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.getppid() == pid
