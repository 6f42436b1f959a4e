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
    vnni: bool = False  # int8 dot products with 32-bit sums (avx512_vnni / avx_vnni)

    @property
    def exact_int8(self) -> bool:
        """Whether oneDNN's int8 matmul keeps 32-bit sums here. Without VNNI (AVX2, AVX-512
        before Cascade Lake) it multiplies u8 x s8 into saturating 16-bit sums: logits
        ~20% off, so int8 is never offered there."""
        return self.tier == "amx" or self.vnni

    def capped(self, cap: str) -> CpuIsa:
        """This CPU seen as a CPU of tier ``cap`` (``auto``: as it is); ValueError above it."""
        if cap == "auto" or cap == self.tier:
            return self
        if TIERS.index(cap) > TIERS.index(self.tier):
            raise ValueError(f"this CPU ({self.model_name}) offers {self.tier}, not {cap}")
        fast_bf16 = self.fast_bf16 and cap != "avx2"
        # the capped oneDNN keeps VNNI only at AVX512_CORE_BF16 (see cap_environment)
        return CpuIsa(cap, fast_bf16, self.model_name, self.vnni and fast_bf16)


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
    vnni = tier == "amx" or bool(cpu_flags() & {"avx512_vnni", "avx_vnni"})
    return CpuIsa(tier, fast_bf16, cpu_model_name(), vnni)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where it cannot be read)."""
    return set((_cpuinfo_field("flags") or "").split())


def _cpuinfo_field(name: str) -> str | None:
    """The first CPU's value of ``name`` in /proc/cpuinfo; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    name = _cpuinfo_field("model name")
    if name is not None:
        return name.strip()
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
