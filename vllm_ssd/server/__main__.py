"""``python -m vllm_ssd.server --socket PATH [--settings-json JSON] [--secrets-on-stdin]``

Starts a draft server listening on a private ``ipc://`` socket. It waits for the
proposer's handshake (which carries K, the target's vocabulary and sizes), loads
the draft model, answers, and serves steps until shutdown or until its parent
process exits. The proposer normally starts it; it can also be run by hand.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time

import zmq

from vllm_ssd import protocol as P
from vllm_ssd.server.frame_guard import FrameGuard, StepLimits, secret_matches
from vllm_ssd.settings import SSDSettings
from vllm_ssd.server.factory import build_engine

logger = logging.getLogger("vllm_ssd.server")


LOG_FORMAT = ("(draft-server pid=%(process)d) %(levelname)s %(asctime)s "
              "[%(filename)s:%(lineno)d] %(message)s")  # vLLM's layout
LOG_DATE_FORMAT = "%m-%d %H:%M:%S"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_ssd.server", description=__doc__)
    parser.add_argument("--socket", required=True, help="path of the ipc socket to bind")
    parser.add_argument("--settings-json", default="{}", help="SSDSettings as JSON")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process exits")
    parser.add_argument("--secrets-on-stdin", action="store_true",
                        help="read the session token and stats key as one JSON line on stdin "
                             "(without it both are empty)")
    args = parser.parse_args(argv)
    # vLLM's own logging level variable applies to the draft server too
    logging.basicConfig(level=os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    settings = SSDSettings.model_validate_json(args.settings_json)
    token, stats_key = _read_secrets() if args.secrets_on_stdin else ("", "")
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"ipc://{args.socket}")
    try:
        return _run(socket, settings, token, FrameGuard(stats_key), args.parent_pid)
    finally:
        socket.close()
        context.term()
        if os.path.exists(args.socket):
            os.unlink(args.socket)


def _read_secrets() -> tuple[str, str]:
    """One JSON line from the pipe the proposer wrote and closed: nothing stays readable
    (no environment variable, no file)."""
    secrets = json.loads(sys.stdin.readline() or "{}")
    sys.stdin.close()
    return str(secrets.get("token", "")), str(secrets.get("stats_key", ""))


def _run(socket, settings: SSDSettings, token: str, guard: FrameGuard, parent_pid: int) -> int:
    greeting = _await_hello(socket, settings.startup_timeout_s, token, guard)
    if greeting is None:
        return 1
    identity, hello = greeting
    try:
        engine = build_engine(settings, hello)
    except Exception as error:
        logger.exception("draft server start-up failed")
        socket.send_multipart([identity, P.encode(P.HelloReply(
            version=P.PROTOCOL_VERSION, ok=False, error=f"{type(error).__name__}: {error}"))])
        return 1
    guard.count_drops_with(engine.stats.observe_dropped_frame)
    limits = StepLimits(hello.max_num_seqs, hello.num_speculative_tokens,
                        hello.target_vocab_size, engine.table.max_len)
    guard.bind(identity, limits)
    arch = engine.passes.runner.arch
    socket.send_multipart([identity, P.encode(P.HelloReply(
        version=P.PROTOCOL_VERSION, ok=True, vocab_size=arch.vocab_size,
        model_type=arch.model_type, device=str(engine.passes.runner.device), pid=os.getpid()))])
    from vllm_ssd.server.loop import ServerLoop
    ServerLoop(socket, engine, guard, limits, parent_pid, settings.busy_poll_seconds()).serve()
    return 0


def _await_hello(socket, timeout_s: float, token: str, guard: FrameGuard):
    """(identity, Hello) of the first handshake with the session token, within timeout_s.
    Anything else is dropped; a Hello with a wrong token or version is answered with a
    refusal (and the wait goes on)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining_ms = int(1000 * (deadline - time.monotonic()))
        if remaining_ms <= 0 or not socket.poll(remaining_ms):
            logger.error("no handshake within %.0f s", timeout_s)
            return None
        admitted = guard.admit_hello(socket.recv_multipart())
        if admitted is None:
            continue
        identity, hello = admitted
        if hello.version == P.PROTOCOL_VERSION and secret_matches(hello.token, token):
            return identity, hello
        guard.reject("handshake with a wrong token or protocol version %d", hello.version,
                     identity=identity)
        socket.send_multipart([identity, P.encode(P.HelloReply(
            version=P.PROTOCOL_VERSION, ok=False, error="handshake rejected (version or token)"))])


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
