"""Which dtype and GEMM kernel a CPU draft runs with: probed and timed once at load.

The candidates are every (dtype, linear kind) the settings allow on this CPU's tier (see
``vllm_ssd.cpu_isa``). Each is built on a weight of the draft's widest layer shape and timed
for a 1-row and an 8-row GEMM; a candidate whose kernel cannot be built or run here drops out
(oneDNN's bfloat16 matmul, say, on an AVX2 CPU), and the fastest one wins. An int8 candidate
must beat the fastest float one by ``INT8_MARGIN`` under ``draft_quantization="auto"``
(its drafts differ slightly), and is the only kind allowed under ``"int8"``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from vllm_ssd.cpu_isa import CpuIsa
from vllm_ssd.server.model.cpu_linear import FLOAT_KINDS, INT8_KINDS, make_linear
from vllm_ssd.settings import SSDConfigError

logger = logging.getLogger(__name__)

INT8_MARGIN = 1.15
MAX_PROBE_ERROR = 0.1  # relative error of a probe GEMM against float32 (int8: ~0.01-0.04)
PROBE_ROWS = (1, 8)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.bfloat16}


@dataclass(frozen=True)
class Candidate:
    dtype: torch.dtype
    linear: str  # a kind of cpu_linear

    def label(self) -> str:
        return f"{self.linear}/{str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class CpuKernelPlan:
    isa: CpuIsa
    dtype: torch.dtype
    linear: str
    probe_ms: dict[str, float] = field(default_factory=dict)  # candidate label -> ms

    def describe(self) -> str:
        timings = ", ".join(f"{name} {ms:.2f}" for name, ms in self.probe_ms.items())
        return (f"CPU {self.isa.model_name!r}: isa {self.isa.tier} (fast bf16: "
                f"{'yes' if self.isa.fast_bf16 else 'no'}), dtype "
                f"{str(self.dtype).removeprefix('torch.')}, linears {self.linear}; "
                f"GEMM probe ms (1 + 8 rows): {timings or 'not timed'}")


def candidate_dtypes(checkpoint_dtype: str, requested: str, isa: CpuIsa) -> list[torch.dtype]:
    """``draft_dtype`` as given, else the checkpoint's, plus float32 where a bfloat16
    checkpoint meets a CPU without bfloat16 hardware (PyTorch then converts every GEMM)."""
    if requested != "auto":
        return [_DTYPES[requested]]
    native = _DTYPES.get(checkpoint_dtype, torch.float32)
    if native == torch.bfloat16 and not isa.fast_bf16:
        return [torch.bfloat16, torch.float32]
    return [native]


def candidates(dtypes: list[torch.dtype], quantization: str, isa: CpuIsa) -> list[Candidate]:
    kinds = {"none": FLOAT_KINDS, "int8": INT8_KINDS}.get(quantization, FLOAT_KINDS + INT8_KINDS)
    found = []
    for dtype in dtypes:
        for kind in kinds:
            if kind == "amx_int8" and (isa.tier != "amx" or dtype != torch.bfloat16):
                continue
            if kind == "onednn_int8" and not isa.exact_int8:
                continue  # no VNNI: saturating 16-bit sums (see CpuIsa.exact_int8)
            if kind == "onednn" and dtype == torch.bfloat16 and not isa.fast_bf16:
                continue  # oneDNN has no bfloat16 matmul without bf16 hardware
            found.append(Candidate(dtype, kind))
    return found


def time_candidate(candidate: Candidate, out_features: int, in_features: int) -> float:
    """Median ms of a 1-row plus an 8-row GEMM of one [N, K] layer; raises if it cannot run."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02  # [N, K]
    linear = make_linear(candidate.linear, weight, None, candidate.dtype)
    total = 0.0
    for rows in PROBE_ROWS:
        x = torch.randn(rows, in_features, generator=generator).to(candidate.dtype)  # [T, K]
        expected = torch.nn.functional.linear(x.float(), weight)  # [T, N]
        out = linear(x)
        error = (out.float() - expected).norm() / expected.norm()
        if out.shape != (rows, out_features) or not error < MAX_PROBE_ERROR:
            raise RuntimeError(f"{candidate.label()} is off by {float(error):.3g} (relative)")
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            linear(x)
            samples.append(time.perf_counter() - start)
        total += sorted(samples)[len(samples) // 2]
    return 1000 * total


def choose_cpu_kernels(isa: CpuIsa, checkpoint_dtype: str, requested_dtype: str,
                       quantization: str, layer_shape: tuple[int, int],
                       timer=None) -> CpuKernelPlan:
    """The fastest candidate that runs here (``timer``: ``time_candidate`` unless given)."""
    timer = timer or time_candidate
    dtypes = candidate_dtypes(checkpoint_dtype, requested_dtype, isa)
    timings: dict[Candidate, float] = {}
    for candidate in candidates(dtypes, quantization, isa):
        try:
            timings[candidate] = timer(candidate, *layer_shape)
        except Exception as error:  # this kernel does not run on this CPU / build
            logger.info("draft GEMM %s unavailable here: %s", candidate.label(),
                        str(error).splitlines()[0] if str(error) else type(error).__name__)
    if not timings:
        if quantization == "int8":
            raise SSDConfigError(
                f"vllm_ssd: unusable SSD setting 'draft_quantization' = 'int8': no exact int8 "
                f"GEMM runs on this CPU ({isa.model_name}, tier {isa.tier}, VNNI "
                f"{'yes' if isa.exact_int8 else 'no'}) with this vLLM build; use 'auto' or "
                f"'none'")
        return CpuKernelPlan(isa, dtypes[0], "torch")  # PyTorch itself always runs
    best = min(timings, key=timings.get)
    floats = {c: ms for c, ms in timings.items() if c.linear in FLOAT_KINDS}
    if best.linear in INT8_KINDS and floats and quantization == "auto":
        best_float = min(floats, key=floats.get)
        if timings[best] * INT8_MARGIN > timings[best_float]:
            best = best_float
    return CpuKernelPlan(isa, best.dtype, best.linear,
                         {c.label(): round(ms, 3) for c, ms in timings.items()})
