"""DraftClient: starts, talks to, and restarts the draft server process.

Local-only IPC: a ZMQ DEALER socket on ``ipc://<private dir>/draft-<pid>-<n>.sock``
(the directory is created 0700), plus a random token checked in the handshake.
No port is ever opened. Failures (death, timeout, error reply) raise
``DraftServerUnavailable``; the caller decides what to do without drafts.
"""
from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import count

import msgspec
import zmq

from vllm_ssd import envs
from vllm_ssd import protocol as P
from vllm_ssd.cpu_isa import cap_environment, detect_cpu_isa
from vllm_ssd.settings import SSDSettings

logger = logging.getLogger(__name__)
_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY",
               "KMP_AFFINITY", "KMP_BLOCKTIME", "KMP_TPAUSE")
POLL_SLICE_MS = 20
# the server runs the same vllm_ssd as this proposer, whatever the working directory holds
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SERVER_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from vllm_ssd.server.__main__ import main; sys.exit(main())")


class DraftServerUnavailable(RuntimeError):
    pass


MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path holds 107 bytes


@dataclass
class ServerProcess:
    process: subprocess.Popen
    socket_path: str
    address_file: str  # <runtime dir>/draft-*.addr: where readers find the socket
    token: str
    short_dir: str | None = None  # private directory used when the runtime dir is too deep


def runtime_dir(settings: SSDSettings) -> str:
    path = settings.runtime_dir or os.path.join(tempfile.gettempdir(), f"vllm-ssd-{os.getpid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class DraftClient:
    def __init__(self, settings: SSDSettings, hello: P.Hello):
        self.settings = settings
        self.hello = hello
        self.context = zmq.Context()
        self.socket: zmq.Socket | None = None
        self.server: ServerProcess | None = None
        self.reply_info: P.HelloReply | None = None
        self.sequence = count()
        self.awaiting_hello = False

    def start(self, wait: bool = True) -> None:
        """Spawns the server and sends the handshake; with ``wait`` blocks for its reply."""
        self.close_server()
        name = os.path.join(runtime_dir(self.settings), f"draft-{os.getpid()}-{secrets.token_hex(4)}")
        path, short_dir = name + ".sock", None
        if len(path) > MAX_SOCKET_PATH:
            short_dir = tempfile.mkdtemp(prefix="vllm-ssd-", dir="/tmp")
            path = os.path.join(short_dir, "draft.sock")
        with open(name + ".addr", "w") as handle:
            handle.write(path)
        token = secrets.token_hex(16)
        self.server = ServerProcess(self._spawn(path, token), path, name + ".addr", token, short_dir)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"ipc://{path}")
        self.socket.send(P.encode(msgspec.structs.replace(self.hello, token=token)))
        self.awaiting_hello = True
        if wait:
            self._finish_handshake(self.settings.startup_timeout_s)

    def _spawn(self, path: str, token: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
        env[envs.IPC_TOKEN] = token
        settings = self.settings
        if settings.draft_device.startswith("cuda"):
            # the server sees only its own GPU, so it never touches the target's memory
            env["CUDA_VISIBLE_DEVICES"] = _physical_gpu(settings.draft_device)
            settings = settings.model_copy(update={"draft_device": "cuda:0"})
        elif settings.draft_device == "cpu":  # a capped ISA caps oneDNN and PyTorch there too
            env.update(cap_environment(detect_cpu_isa(), settings.draft_cpu_isa))
        # not "-m vllm_ssd.server": that imports a vllm_ssd in the working directory first
        command = [sys.executable, "-c", _SERVER_BOOT, _PACKAGE_ROOT, "--socket", path,
                   "--settings-json", settings.model_dump_json(),
                   "--parent-pid", str(os.getpid())]
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    def ready(self) -> bool:
        """Non-blocking: completes a pending handshake if its reply has arrived."""
        if not self.awaiting_hello:
            return self.server is not None
        try:
            self._finish_handshake(0.0)
        except DraftServerUnavailable as error:
            logger.warning("draft server restart failed: %s", error)
            self.close_server()
            return False
        return not self.awaiting_hello

    def _finish_handshake(self, timeout_s: float) -> None:
        reply = self._receive(timeout_s, allow_pending=timeout_s == 0.0)
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

    def step(self, request: P.StepRequest) -> P.StepReply:
        self._require_server()
        request.seq = next(self.sequence)
        self.socket.send(P.encode(request))
        while True:
            reply = self._receive(self.settings.ipc_timeout_s, allow_pending=False)
            if isinstance(reply, P.ErrorReply):
                raise DraftServerUnavailable(f"draft server error: {reply.error}")
            if isinstance(reply, P.StepReply) and reply.seq == request.seq:
                return reply

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
            reply = self._receive(timeout_s, allow_pending=False)
            if isinstance(reply, P.StatsReply):
                return reply.stats

    def _receive(self, timeout_s: float, allow_pending: bool):
        if not allow_pending and (message := self._busy_poll()) is not None:
            return message
        deadline = time.monotonic() + timeout_s
        while True:
            if self.socket.poll(POLL_SLICE_MS if not allow_pending else 0):
                return P.decode(self.socket.recv())
            if self.server.process.poll() is not None:
                raise DraftServerUnavailable(
                    f"draft server exited with code {self.server.process.returncode}")
            if allow_pending:
                return None
            if time.monotonic() > deadline:
                raise DraftServerUnavailable(f"no reply from the draft server in {timeout_s} s")

    def _busy_poll(self):
        """The next message if it comes within ``busy_poll_ms`` (polled without sleeping:
        a blocking poll adds the wake-up of an idle thread to every round trip)."""
        end = time.perf_counter() + self.settings.busy_poll_seconds()
        while time.perf_counter() < end:
            if self.socket.poll(0):
                return P.decode(self.socket.recv())
        return None

    @property
    def pid(self) -> int | None:
        return self.server.process.pid if self.server else None

    def close_server(self) -> None:
        """Stops the server process (message, then SIGTERM, then SIGKILL)."""
        if self.socket is not None and self.server is not None:
            try:
                self.socket.send(P.encode(P.Shutdown()), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        if self.server is not None:
            _stop_process(self.server.process)
            for path in (self.server.socket_path, self.server.address_file):
                if os.path.exists(path):
                    os.unlink(path)
            if self.server.short_dir:
                os.rmdir(self.server.short_dir)
        if self.socket is not None:
            self.socket.close()
        self.socket, self.server, self.awaiting_hello = None, None, False

    def close(self) -> None:
        self.close_server()
        self.context.term()


def _physical_gpu(device: str) -> str:
    """cuda:N of this process -> the id to put in the child's CUDA_VISIBLE_DEVICES."""
    index = int(device.partition(":")[2] or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return visible.split(",")[index].strip()
    return str(index)


def _stop_process(process: subprocess.Popen) -> None:
    for action, wait in ((None, 5.0), (process.terminate, 5.0), (process.kill, 5.0)):
        if action is not None:
            action()
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
