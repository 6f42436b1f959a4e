"""``python -m vllm_ssd.server --socket PATH [--settings-json JSON]``

Starts a draft server listening on a private ``ipc://`` socket. It waits for the
proposer's handshake (which carries K, the target's vocabulary and sizes), loads
the draft model, answers, and serves steps until shutdown or until its parent
process exits. The proposer normally starts it; it can also be run by hand.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys

import zmq

from vllm_ssd import envs
from vllm_ssd import protocol as P
from vllm_ssd.settings import SSDSettings
from vllm_ssd.server.factory import build_engine

logger = logging.getLogger("vllm_ssd.server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_ssd.server", description=__doc__)
    parser.add_argument("--socket", required=True, help="path of the ipc socket to bind")
    parser.add_argument("--settings-json", default="{}", help="SSDSettings as JSON")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this process exits")
    args = parser.parse_args(argv)
    # vLLM's own logging level variable applies to the draft server too
    logging.basicConfig(level=os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="(draft-server pid=%(process)d) %(levelname)s %(message)s")
    settings = SSDSettings.model_validate_json(args.settings_json)
    token = os.environ.pop(envs.IPC_TOKEN, "")
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"ipc://{args.socket}")
    try:
        return _run(socket, settings, token, args.parent_pid)
    finally:
        socket.close()
        context.term()
        if os.path.exists(args.socket):
            os.unlink(args.socket)


def _run(socket, settings: SSDSettings, token: str, parent_pid: int) -> int:
    if not socket.poll(int(settings.startup_timeout_s * 1000)):
        logger.error("no handshake within %.0f s", settings.startup_timeout_s)
        return 1
    identity, payload = socket.recv_multipart()
    hello = P.decode(payload)
    if not isinstance(hello, P.Hello) or hello.version != P.PROTOCOL_VERSION or hello.token != token:
        socket.send_multipart([identity, P.encode(P.HelloReply(
            version=P.PROTOCOL_VERSION, ok=False, error="handshake rejected (version or token)"))])
        return 1
    try:
        engine = build_engine(settings, hello)
    except Exception as error:
        logger.exception("draft server start-up failed")
        socket.send_multipart([identity, P.encode(P.HelloReply(
            version=P.PROTOCOL_VERSION, ok=False, error=f"{type(error).__name__}: {error}"))])
        return 1
    arch = engine.drafter.runner.arch
    socket.send_multipart([identity, P.encode(P.HelloReply(
        version=P.PROTOCOL_VERSION, ok=True, vocab_size=arch.vocab_size,
        model_type=arch.model_type, device=str(engine.drafter.runner.device), pid=os.getpid()))])
    from vllm_ssd.server.server import DraftServer
    DraftServer(socket, engine, parent_pid, settings.busy_poll_seconds()).serve()
    return 0


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
