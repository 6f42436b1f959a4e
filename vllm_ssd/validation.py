"""Checks of SSD settings against the target, run before vLLM starts its engine,
so bad input stops start-up with one message that names the setting."""
from __future__ import annotations

import json
import os
from pathlib import Path

from vllm_ssd.arch import ModelArch
from vllm_ssd.settings import SSDConfigError, SSDSettings, parse_cpu_list

MAX_SPECULATIVE_TOKENS = 16


def check_num_speculative_tokens(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SPECULATIVE_TOKENS:
        raise SSDConfigError(
            f"vllm_ssd: invalid 'num_speculative_tokens' = {value!r}: SSD needs an integer "
            f"between 1 and {MAX_SPECULATIVE_TOKENS}")
    return value


def resolve_draft_model(name: str | None) -> str:
    """A local directory with config.json, or a hub id fetched into the HF cache."""
    if not name:
        raise SSDConfigError(
            "vllm_ssd: missing SSD setting 'draft_model': give the draft as \"model\" in "
            "--speculative-config '{\"method\": \"ssd\", ...}' or set VLLM_SSD_DRAFT_MODEL")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_model' = {name!r}: "
                                 "the directory has no config.json")
        return str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_model' = {name!r}: "
                             "no such model directory")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model"])
    except Exception as error:  # offline, unknown repo, auth, ...
        raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_model' = {name!r}: not a "
                             f"local directory and not fetchable from the hub ({error})") from None


def check_vocab(draft_dir: str, target_vocab_size: int) -> None:
    config = json.loads((Path(draft_dir) / "config.json").read_text())
    draft_vocab = config.get("vocab_size")
    if draft_vocab != target_vocab_size:
        raise SSDConfigError(
            f"vllm_ssd: invalid SSD setting 'draft_model' = {draft_dir!r}: its vocabulary "
            f"({draft_vocab} tokens) differs from the target's ({target_vocab_size}); the draft "
            "must use the target's tokenizer")


def check_cpus(spec: str | None) -> None:
    if spec is None:
        return
    try:
        cpus = parse_cpu_list(spec)
    except ValueError:
        raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_cpus' = {spec!r}: "
                             "expected a CPU list such as '1' or '2-3,6'") from None
    online = set(range(os.cpu_count() or 1))
    if not cpus or not set(cpus) <= online:
        raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_cpus' = {spec!r}: this "
                             f"machine has CPUs 0-{max(online)}")


def resolve_device(spec: str, target_gpus: int) -> str:
    """auto -> a GPU the target does not use, else GPU 0, else cpu."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        if count == 0:
            return "cpu"
        return f"cuda:{target_gpus}" if count > target_gpus else "cuda:0"
    if spec == "cpu":
        return spec
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_device' = {spec!r}")
        if int(index) >= count:
            raise SSDConfigError(f"vllm_ssd: unusable SSD setting 'draft_device' = {spec!r}: "
                                 f"{count} CUDA device(s) visible")
        return f"cuda:{index}"
    raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_device' = {spec!r}: "
                         "use auto, cpu, cuda or cuda:N")


def shares_gpu(draft_device: str, target_device: str | None, current_index: int = 0) -> bool:
    """Whether a draft on ``draft_device`` (as ``resolve_device`` names it) runs on the
    target's GPU, ``target_device`` as torch names it ('cuda:1', 'cpu'; a bare 'cuda' is
    GPU ``current_index``)."""
    target = str(target_device or "")
    if not draft_device.startswith("cuda") or not target.startswith("cuda"):
        return False
    return cuda_index(draft_device) == cuda_index(target, current_index)


def cuda_index(device: str, default: int = 0) -> int:
    """'cuda:N' -> N; a bare 'cuda' -> ``default``."""
    number = device.partition(":")[2]
    return int(number) if number else default


def check_quantization(quantization: str, device: str) -> None:
    if quantization == "int8" and device != "cpu":
        raise SSDConfigError(f"vllm_ssd: unusable SSD setting 'draft_quantization' = "
                             f"{quantization!r}: int8 drafts run on a CPU draft device only "
                             f"(draft_device resolved to {device!r})")


def check_cpu_isa(cap: str, device: str) -> None:
    """``draft_cpu_isa`` may lower a CPU draft's ISA tier, never raise it."""
    if cap == "auto" or device != "cpu":
        return
    from vllm_ssd.cpu_isa import detect_cpu_isa

    try:
        detect_cpu_isa().capped(cap)
    except ValueError as error:
        raise SSDConfigError(f"vllm_ssd: unusable SSD setting 'draft_cpu_isa' = {cap!r}: "
                             f"{error}") from None


def validate_for_target(settings: SSDSettings, target_vocab_size: int,
                        num_speculative_tokens, target_gpus: int) -> SSDSettings:
    """Returns the settings with the draft path and device resolved, or raises."""
    check_num_speculative_tokens(num_speculative_tokens)
    draft_dir = resolve_draft_model(settings.draft_model)
    check_vocab(draft_dir, target_vocab_size)
    try:
        ModelArch.from_dir(draft_dir)
    except (ValueError, KeyError) as error:
        raise SSDConfigError(f"vllm_ssd: invalid SSD setting 'draft_model' = {draft_dir!r}: "
                             f"{error}") from None
    check_cpus(settings.draft_cpus)
    device = resolve_device(settings.draft_device, target_gpus)
    check_quantization(settings.draft_quantization, device)
    check_cpu_isa(settings.draft_cpu_isa, device)
    return settings.model_copy(update={"draft_model": draft_dir, "draft_device": device})
