"""SSD settings: one validated, immutable pydantic model.

Sources, later ones winning: defaults < JSON file named by ``VLLM_SSD_CONFIG`` <
``VLLM_SSD_*`` environment variables < ``additional_config["vllm_ssd"]`` <
keys of ``--speculative-config '{"method": "ssd", ...}'``. Every error names the
setting and where it came from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)

from vllm_ssd import envs

ADDITIONAL_CONFIG_KEY = "vllm_ssd"
INTERNAL_FIELDS = ("load_format", "runtime_dir")  # set by the plugin, not by users


class SSDConfigError(ValueError):
    """A bad SSD setting; the message names it."""


class SSDSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    draft_model: str | None = None  # local directory or hub id of the draft
    draft_device: str = "auto"  # auto | cpu | cuda | cuda:N
    draft_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    draft_quantization: Literal["auto", "none", "int8"] = "auto"  # int8: W8A8 draft linears
    # (CPU drafts: slightly different drafts, same output); auto = int8 where a probe at load
    # times it clearly faster than the fastest float GEMM on this CPU, else none
    draft_cpu_isa: Literal["auto", "amx", "avx512", "avx2"] = "auto"  # highest x86 ISA tier
    # the CPU draft's kernels may use (auto: the CPU's own); lower it to take a fallback path
    draft_cpus: str | None = None  # CPU cores of the draft server, e.g. "1" or "2-3,6"
    mode: Literal["auto", "ssd", "sd"] = "auto"  # ssd: speculation cache; sd: draft after
    # each outcome; auto: whichever measures more tokens/s (see vllm_ssd/server/speculation/route.py)
    fanout_budget: int = Field(8, ge=1, le=64)  # max cached outcomes per request per round
    fanout_r: float | None = Field(None, gt=0)  # miss power-law exponent; None = estimate
    saguaro_c: float = Field(1.0, gt=0, le=1)  # Saguaro sampling: top-F draft probs x C
    backup: Literal["auto", "neural", "ngram"] = "auto"  # backup speculator on a miss
    build_plan: Literal["auto", "full"] = "auto"  # auto: fit (B, depth) to a target step
    # with the speed model; full: always the whole budget and depth K
    build_deadline: float = Field(1.5, ge=0)  # cut a cache build short once a step has
    # been waiting and the build ran longer than this many target steps (inf = never)
    prefill_chunk: int | None = Field(None, ge=1)  # prompt tokens the draft prefills per
    # cache build (the rest in later rounds); None = 2048 on a GPU, and on a CPU what the
    # draft prefills in 50 ms at its measured rate (see vllm_ssd/server/speculation/prefill_pacer.py)
    ipc_timeout_s: float = Field(30.0, gt=0)  # a server silent this long = down (restarted)
    step_deadline_ms: float | None = Field(None, gt=0)  # longest wait for a step's drafts
    # (then the step goes on without them); None = measured (see vllm_ssd/client/deadline.py)
    busy_poll_ms: float | None = Field(None, ge=0)  # poll the socket without sleeping this
    # long before blocking (server after a build, proposer awaiting a reply): no wake-up
    # latency, one busy core each; None = 20 with a CUDA draft device, 0 on CPU
    startup_timeout_s: float = Field(600.0, gt=0)  # draft model load + handshake
    enforce_eager: bool = False  # CUDA drafts: no CUDA graphs
    block_size: int = Field(16, ge=1, le=1024)
    kv_cache_gb: float | None = Field(None, gt=0)  # draft KV cache memory (GiB); None = a
    # share of the memory free at start-up (see vllm_ssd/server/kv/budget.py)
    kv_cache_tokens: int | None = Field(None, ge=1)  # draft KV capacity in tokens (wins over
    # kv_cache_gb); requests beyond it decode without drafts until blocks free up
    sim_hit_rate: float | None = Field(None, ge=0, le=1)  # benchmarks only: simulated hits
    sim_ms_per_token: float = Field(0.0, ge=0)  # tests and benchmarks only: each draft
    # forward also sleeps this long per token it runs (a slower draft device)
    sim_route_delay_ms: dict[Literal["ssd", "sd"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict)  # tests only: a step on this route also waits this long
    stand_aside: bool = True  # stop speculating for good where it measures a loss even
    # counting the cores the target gets back from a CPU draft (which it then gets)
    log_interval_s: float = Field(10.0, ge=0)  # periodic SSD metrics log line; 0 = off
    seed: int = 0  # draft sampling seed
    load_format: Literal["auto", "dummy"] = "auto"  # internal: follows vLLM's load_format
    runtime_dir: str | None = None  # internal: private directory for IPC sockets

    @field_validator("step_deadline_ms")
    @classmethod
    def _deadline_within_timeout(cls, value: float | None, info: ValidationInfo):
        timeout_s = info.data.get("ipc_timeout_s")
        if value is not None and timeout_s is not None and value > 1e3 * timeout_s:
            raise ValueError(f"must not exceed ipc_timeout_s ({timeout_s} s)")
        return value

    @classmethod
    def user_field_names(cls) -> list[str]:
        return [name for name in cls.model_fields if name not in INTERNAL_FIELDS]

    def on_gpu(self) -> bool:
        return self.draft_device.startswith("cuda")

    def draft_cpu_list(self) -> list[int]:
        """The CPU draft server's cores: ``draft_cpus``, else the machine's last CPU."""
        if self.draft_cpus:
            return parse_cpu_list(self.draft_cpus)
        return [(os.cpu_count() or 1) - 1]

    def busy_poll_seconds(self) -> float:
        if self.busy_poll_ms is not None:
            return self.busy_poll_ms / 1e3
        return DEVICE_DEFAULTS[self.on_gpu()]["busy_poll_s"]

    def prefill_chunk_tokens(self) -> int | None:
        """The fixed chunk in tokens; None: sized by measured time."""
        return self.prefill_chunk or DEVICE_DEFAULTS[self.on_gpu()]["prefill_chunk"]


# Defaults that depend on the draft device (measured; on_gpu -> values): a CUDA draft
# server polls its socket after a build (no wake-up latency) and prefills long chunks; a
# CPU one must not spin a core the target needs, and prefills in chunks of measured time so
# that a build stays within a few target steps. row_cost_prior: the cost of one more row in a draft
# forward, as a fraction of a one-row forward, before any was measured
# (benchmarks/profile_draft.py).
DEVICE_DEFAULTS = {
    True: {"busy_poll_s": 0.02, "prefill_chunk": 2048, "row_cost_prior": 0.01},
    False: {"busy_poll_s": 0.0, "prefill_chunk": None, "row_cost_prior": 0.03},
}


def parse_cpu_list(spec: str) -> list[int]:
    """The ``draft_cpus`` format: '1', '2-3,6' -> [1], [2, 3, 6]."""
    cpus: list[int] = []
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def resolve_settings(overrides: dict[str, Any] | None = None, override_source: str = "",
                     additional: dict[str, Any] | None = None,
                     environ: dict[str, str] | None = None) -> SSDSettings:
    """Merges all sources into one ``SSDSettings`` or raises ``SSDConfigError``."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def add(values: dict[str, Any], source: str) -> None:
        for key, value in values.items():
            merged[key] = value
            origin[key] = source

    path = envs.config_file(environ)
    if path:
        add(_read_file(path), f"{envs.CONFIG_FILE}={path}")
    try:
        env_values = envs.setting_variables(SSDSettings.user_field_names(), environ)
    except KeyError as error:
        raise SSDConfigError(
            f"vllm_ssd: unknown SSD setting {error.args[0]} (environment variable); "
            f"known settings: {', '.join(map(envs.env_name, SSDSettings.user_field_names()))}"
        ) from None
    add(env_values, "environment variable")
    add(dict(additional or {}), f'additional_config["{ADDITIONAL_CONFIG_KEY}"]')
    add(dict(overrides or {}), override_source or "arguments")
    try:
        return SSDSettings(**merged)
    except ValidationError as error:
        raise _named_error(error, origin) from None


def _read_file(path: str) -> dict[str, Any]:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SSDConfigError(f"vllm_ssd: cannot read {envs.CONFIG_FILE}={path}: {error}") from None
    if not isinstance(values, dict):
        raise SSDConfigError(f"vllm_ssd: {envs.CONFIG_FILE}={path} must hold a JSON object")
    return values


def _named_error(error: ValidationError, origin: dict[str, str]) -> SSDConfigError:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    source = origin.get(name, "arguments")
    if first["type"] == "extra_forbidden":
        return SSDConfigError(
            f"vllm_ssd: unknown SSD setting '{name}' (from {source}); known settings: "
            f"{', '.join(SSDSettings.user_field_names())}")
    return SSDConfigError(
        f"vllm_ssd: invalid SSD setting '{name}' = {first.get('input')!r} (from {source}): "
        f"{first['msg']}")
