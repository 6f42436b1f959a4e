"""The draft server's process as its proposer supervises it: started with the proposer's
vllm_ssd, its own GPU or a capped CPU ISA and its secrets on a pipe; stopped with a
Shutdown message, then SIGKILL reaped off the caller's thread, its socket removed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from vllm_ssd.client.reaper import kill_off_the_critical_path, stop_gracefully
from vllm_ssd.cpu_isa import cap_environment, detect_cpu_isa
from vllm_ssd.settings import SSDSettings
from vllm_ssd.validation import cuda_index

_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND", "GOMP_CPU_AFFINITY",
               "KMP_AFFINITY", "KMP_BLOCKTIME", "KMP_TPAUSE")
# oneDNN keeps a primitive per GEMM shape, up to 1024 by default; the draft's passes come
# in many row counts, so the server's memory grew by hundreds of MB before levelling off.
# vLLM's GEMM handlers keep their own 32 per layer; a global 64 bounds the growth (the
# tiny test models' soak used the same CPU time with 0, 64 and 1024). A value set in the
# environment wins.
ONEDNN_CACHE_VARIABLE, ONEDNN_CACHE_ENTRIES = "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64"
# the server runs the same vllm_ssd as this proposer, whatever the working directory holds
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SERVER_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from vllm_ssd.server.__main__ import main; sys.exit(main())")


@dataclass
class ServerProcess:
    process: subprocess.Popen
    socket_path: str
    short_dir: str | None = None  # private directory used when the runtime dir is too deep
    started_at: float = 0.0  # time.monotonic() of the spawn


def spawn_server(settings: SSDSettings, path: str, token: str, stats_key: str) -> subprocess.Popen:
    """Starts a draft server listening on ``path``; the token and the stats key go through
    its stdin, read once."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_ENV}
    env.setdefault(ONEDNN_CACHE_VARIABLE, ONEDNN_CACHE_ENTRIES)
    if settings.draft_device.startswith("cuda"):
        # the server sees only its own GPU, so it never touches the target's memory
        env["CUDA_VISIBLE_DEVICES"] = _physical_gpu(settings.draft_device)
        settings = settings.model_copy(update={"draft_device": "cuda:0"})
    elif settings.draft_device == "cpu":  # a capped ISA caps oneDNN and PyTorch there too
        env.update(cap_environment(detect_cpu_isa(), settings.draft_cpu_isa))
    # not "-m vllm_ssd.server": that imports a vllm_ssd in the working directory first
    command = [sys.executable, "-c", _SERVER_BOOT, _PACKAGE_ROOT, "--socket", path,
               "--settings-json", settings.model_dump_json(),
               "--parent-pid", str(os.getpid()), "--secrets-on-stdin"]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE)
    process.stdin.write(json.dumps({"token": token, "stats_key": stats_key}).encode() + b"\n")
    process.stdin.close()  # a pipe: read once by the server, then gone
    return process


def stop_server(server: ServerProcess, graceful: bool) -> None:
    """SIGKILL at once, or after a short wait when ``graceful`` (the caller sent Shutdown
    first), reaped off this thread; the socket and its private directory removed."""
    (stop_gracefully if graceful else kill_off_the_critical_path)(server.process)
    if os.path.exists(server.socket_path):
        os.unlink(server.socket_path)
    if server.short_dir:
        shutil.rmtree(server.short_dir, ignore_errors=True)


def _physical_gpu(device: str) -> str:
    """cuda:N of this process -> the id to put in the child's CUDA_VISIBLE_DEVICES."""
    index = cuda_index(device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return visible.split(",")[index].strip()
    return str(index)
