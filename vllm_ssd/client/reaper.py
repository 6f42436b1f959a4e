"""Stopping a draft server without ever blocking the engine on it.

A failed or hung server is killed with SIGKILL (a stopped process dies of it too) and
reaped by a daemon thread; only an orderly shutdown waits, and briefly.
"""
from __future__ import annotations

import subprocess
import threading

GRACEFUL_WAIT_S = 2.0  # an orderly shutdown: the server's own exit, then SIGKILL


def kill_off_the_critical_path(process: subprocess.Popen) -> None:
    """SIGKILL now; a daemon thread collects the exit status (no zombie, no wait here)."""
    if process.poll() is not None:
        return
    process.kill()
    threading.Thread(target=process.wait, name=f"vllm-ssd-reap-{process.pid}",
                     daemon=True).start()


def stop_gracefully(process: subprocess.Popen) -> None:
    """Waits up to GRACEFUL_WAIT_S for the server to exit on its own (it was sent a
    Shutdown), then kills it as above."""
    try:
        process.wait(timeout=GRACEFUL_WAIT_S)
    except subprocess.TimeoutExpired:
        kill_off_the_critical_path(process)
