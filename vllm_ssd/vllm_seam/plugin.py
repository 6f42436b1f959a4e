"""The general plugin: lets vLLM accept ``--speculative-config '{"method": "ssd", ...}'``.

vLLM validates ``method`` against a closed list and rejects unknown keys, so the
plugin translates an SSD config into vLLM's supported out-of-tree hook,
``{"method": "custom_class", "model": "vllm_ssd.SSDProposer", ...}``, and moves
the SSD settings (validated, with the draft path and device resolved) into
``additional_config["vllm_ssd"]``, which travels with the engine config to every
process. This is the project's one patch: it wraps
``EngineArgs.create_speculative_config`` (identical in vLLM 0.24 - 0.33), the
function that turns the user's dict into vLLM's ``SpeculativeConfig``.
"""
from __future__ import annotations

import functools
import logging
import sys

from vllm_ssd.settings import ADDITIONAL_CONFIG_KEY, SSDConfigError, SSDSettings, resolve_settings

logger = logging.getLogger(__name__)

PROPOSER_PATH = "vllm_ssd.SSDProposer"
PROPOSER_PATHS = (PROPOSER_PATH, "vllm_ssd.vllm_seam.proposer.SSDProposer")
TESTED_VLLM = ((0, 24), (0, 34))  # [min, max) of vLLM versions with this EngineArgs method
# vLLM speculative-config keys that keep their meaning under "method": "ssd"
PASSTHROUGH_KEYS = ("num_speculative_tokens", "max_model_len", "disable_by_batch_size",
                    "rejection_sample_method", "synthetic_acceptance_rates",
                    "synthetic_acceptance_length")
_MARK = "_vllm_ssd_wrapped"


def share_vllm_logging() -> None:
    """Routes ``vllm_ssd`` log records through vLLM's handlers and level (once)."""
    ours, theirs = logging.getLogger("vllm_ssd"), logging.getLogger("vllm")
    if ours.handlers or not theirs.handlers:
        return
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level)
    ours.propagate = False


def report_config_errors_cleanly() -> None:
    """An uncaught ``SSDConfigError`` (``vllm serve`` with a bad SSD setting) ends the
    program with its one message, no traceback; other exceptions go to the previous
    hook. Once per process."""
    previous = sys.excepthook
    if getattr(previous, _MARK, False):
        return

    def excepthook(kind, value, traceback):
        error = value
        while error is not None and not isinstance(error, SSDConfigError):
            error = error.__cause__ or error.__context__
        if error is None:
            previous(kind, value, traceback)
            return
        logger.error("%s", error)

    setattr(excepthook, _MARK, True)
    sys.excepthook = excepthook


def install() -> None:
    """Wraps ``EngineArgs.create_speculative_config`` once per process."""
    from vllm.engine.arg_utils import EngineArgs

    report_config_errors_cleanly()
    original = EngineArgs.create_speculative_config
    if getattr(original, _MARK, False):
        return
    _check_version()

    @functools.wraps(original)
    def create_speculative_config(self, target_model_config, target_parallel_config):
        translate_engine_args(self, target_model_config, target_parallel_config)
        return original(self, target_model_config, target_parallel_config)

    setattr(create_speculative_config, _MARK, True)
    EngineArgs.create_speculative_config = create_speculative_config


def _check_version() -> None:
    import vllm

    parts = tuple(int(p) for p in vllm.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if not TESTED_VLLM[0] <= parts < TESTED_VLLM[1]:
        logger.warning("vllm_ssd was tested with vLLM %s - %s, not %s; the ssd method "
                       "translation may not apply", TESTED_VLLM[0], TESTED_VLLM[1], vllm.__version__)


def translate_engine_args(engine_args, target_model_config, target_parallel_config) -> None:
    """Rewrites an SSD speculative config in place (no-op for any other method)."""
    spec = engine_args.speculative_config
    if not isinstance(spec, dict):
        return
    method = spec.get("method")
    is_ssd = method == "ssd"
    is_raw = spec.get("model") in PROPOSER_PATHS and method in (None, "custom_class")
    if not (is_ssd or is_raw):
        return
    spec = {key.replace("-", "_"): value for key, value in spec.items()}
    vllm_keys = {k: spec.pop(k) for k in PASSTHROUGH_KEYS if k in spec}
    spec.pop("method", None)
    draft = spec.pop("model", None)
    overrides = dict(spec)
    if is_ssd and draft is not None:
        overrides["draft_model"] = draft
    additional = dict(engine_args.additional_config or {})
    settings = resolve_settings(overrides, "--speculative-config" if is_ssd else "",
                                additional.get(ADDITIONAL_CONFIG_KEY))
    settings = _finish(settings, engine_args, target_model_config, target_parallel_config,
                       vllm_keys.get("num_speculative_tokens"))
    additional[ADDITIONAL_CONFIG_KEY] = settings.model_dump()
    engine_args.additional_config = additional
    engine_args.speculative_config = {"method": "custom_class", "model": PROPOSER_PATH, **vllm_keys}


def _finish(settings: SSDSettings, engine_args, target_model_config, target_parallel_config,
            num_speculative_tokens) -> SSDSettings:
    from vllm_ssd.client.runtime_files import new_engine_dir
    from vllm_ssd.vllm_seam.metrics import register_collector
    from vllm_ssd.vllm_seam.quiet_wait import request_quiet_wait
    from vllm_ssd.validation import validate_for_target

    target_gpus = target_parallel_config.world_size if target_parallel_config else 1
    settings = validate_for_target(settings, target_model_config.get_vocab_size(),
                                   num_speculative_tokens, target_gpus)
    runtime_dir = new_engine_dir()
    register_collector()
    if _target_on_cpu():
        request_quiet_wait()
    load_format = "dummy" if str(getattr(engine_args, "load_format", "")) == "dummy" else "auto"
    return settings.model_copy(update={"runtime_dir": runtime_dir, "load_format": load_format})


def _target_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def settings_from_vllm_config(vllm_config) -> SSDSettings:
    """The settings the plugin stored; resolved here if the plugin did not run."""
    stored = (vllm_config.additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
    if stored:
        return SSDSettings(**stored)
    from vllm_ssd.validation import validate_for_target

    settings = validate_for_target(
        resolve_settings(), vllm_config.model_config.get_vocab_size(),
        vllm_config.speculative_config.num_speculative_tokens,
        vllm_config.parallel_config.world_size)
    dummy = str(vllm_config.load_config.load_format) == "dummy"
    return settings.model_copy(update={"load_format": "dummy" if dummy else "auto"})
