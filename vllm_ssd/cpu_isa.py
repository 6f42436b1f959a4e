"""What this x86 CPU can run: its ISA tier, whether it has fast bfloat16, and its name.

Tiers, lowest first: ``avx2`` (e.g. AMD EPYC Zen 2/3), ``avx512`` (AVX-512, with or without
``avx512_bf16``: Intel Skylake-SP to Ice Lake, AMD Zen 4/5) and ``amx`` (AMX tiles: Intel
Sapphire Rapids and newer). The ``draft_cpu_isa`` setting caps the tier the CPU draft's kernels
may use; a capped draft server also caps oneDNN (``ONEDNN_MAX_CPU_ISA``) and PyTorch's
vectorised kernels (``ATEN_CPU_CAPABILITY``), so a capped run takes the same kernel paths as a
CPU of that tier. vLLM's own compiled extension is still the build vLLM chose for this CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

TIERS = ("avx2", "avx512", "amx")
# tier -> (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) for a capped draft server
_CAP_ENV = {"avx2": ("AVX2", "avx2"), "avx512": ("AVX512_CORE_BF16", "avx512")}


@dataclass(frozen=True)
class CpuIsa:
    tier: str  # one of TIERS
    fast_bf16: bool  # bfloat16 dot products in hardware (avx512_bf16 or AMX)
    model_name: str

    def capped(self, cap: str) -> CpuIsa:
        """This CPU seen as a CPU of tier ``cap`` (``auto``: as it is); ValueError above it."""
        if cap == "auto" or cap == self.tier:
            return self
        if TIERS.index(cap) > TIERS.index(self.tier):
            raise ValueError(f"this CPU ({self.model_name}) offers {self.tier}, not {cap}")
        return CpuIsa(cap, self.fast_bf16 and cap != "avx2", self.model_name)


def detect_cpu_isa() -> CpuIsa:
    import torch

    cpu = torch.cpu
    if cpu._is_amx_tile_supported():
        tier = "amx"
    elif cpu._is_avx512_supported():
        tier = "avx512"
    else:
        tier = "avx2"
    fast_bf16 = tier == "amx" or bool(cpu._is_avx512_bf16_supported())
    return CpuIsa(tier, fast_bf16, cpu_model_name())


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def cap_environment(detected: CpuIsa, cap: str) -> dict[str, str]:
    """Environment that makes oneDNN and PyTorch in a new process use at most tier ``cap``."""
    if cap == "auto" or cap == detected.tier:
        return {}
    onednn, aten = _CAP_ENV[cap]
    if cap == "avx512" and not detected.fast_bf16:
        onednn = "AVX512_CORE"
    return {"ONEDNN_MAX_CPU_ISA": onednn, "ATEN_CPU_CAPABILITY": aten}
