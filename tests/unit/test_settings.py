"""SSD settings: sources, precedence and error messages that name the setting."""
import json

import pytest

from vllm_ssd.settings import SSDConfigError, resolve_settings
from vllm_ssd.settings import parse_cpu_list
from vllm_ssd.validation import check_num_speculative_tokens, resolve_device, shares_gpu


def test_defaults_run_on_cpu():
    settings = resolve_settings(environ={})
    assert settings.mode == "auto" and settings.draft_device == "auto"
    assert resolve_device("auto", target_gpus=1) in ("cpu", "cuda:0", "cuda:1")


def test_precedence_file_env_additional_overrides(tmp_path):
    path = tmp_path / "ssd.json"
    path.write_text(json.dumps({"fanout_budget": 3, "mode": "sd", "saguaro_c": 0.5}))
    environ = {"VLLM_SSD_CONFIG": str(path), "VLLM_SSD_MODE": "ssd", "VLLM_SSD_FANOUT_BUDGET": "5"}
    settings = resolve_settings({"fanout_budget": 7}, "--speculative-config",
                                additional={"saguaro_c": 0.9}, environ=environ)
    assert (settings.mode, settings.fanout_budget, settings.saguaro_c) == ("ssd", 7, 0.9)


def test_unknown_setting_is_named():
    with pytest.raises(SSDConfigError, match="unknown SSD setting 'fanout'.*--speculative-config"):
        resolve_settings({"fanout": 3}, "--speculative-config", environ={})
    with pytest.raises(SSDConfigError, match="VLLM_SSD_FANOUTT"):
        resolve_settings(environ={"VLLM_SSD_FANOUTT": "3"})


def test_bad_values_are_named_with_their_source():
    with pytest.raises(SSDConfigError, match="'mode'.*environment variable"):
        resolve_settings(environ={"VLLM_SSD_MODE": "fast"})
    with pytest.raises(SSDConfigError, match="'saguaro_c'"):
        resolve_settings({"saguaro_c": 1.5}, environ={})
    with pytest.raises(SSDConfigError, match="VLLM_SSD_CONFIG"):
        resolve_settings(environ={"VLLM_SSD_CONFIG": "/nonexistent/ssd.json"})


@pytest.mark.parametrize("k", [0, -1, 17, 2.5, None])
def test_num_speculative_tokens_range(k):
    with pytest.raises(SSDConfigError, match="num_speculative_tokens"):
        check_num_speculative_tokens(k)


def test_devices_and_cpu_lists():
    assert parse_cpu_list("1") == [1] and parse_cpu_list("2-3,6") == [2, 3, 6]
    assert resolve_device("cpu", 1) == "cpu"
    with pytest.raises(SSDConfigError, match="draft_device"):
        resolve_device("cuda:7", 1)
    with pytest.raises(SSDConfigError, match="draft_device"):
        resolve_device("tpu", 1)


def test_a_draft_shares_the_target_gpu_only_on_the_same_index():
    assert shares_gpu("cuda:0", "cuda:0") and shares_gpu("cuda:1", "cuda", current_index=1)
    assert not shares_gpu("cuda:1", "cuda:0") and not shares_gpu("cuda:0", "cuda", 1)
    assert not shares_gpu("cpu", "cpu") and not shares_gpu("cuda:0", "cpu")
    assert not shares_gpu("cuda:0", None)


def test_every_user_setting_has_an_environment_variable():
    from vllm_ssd import envs
    from vllm_ssd.settings import INTERNAL_FIELDS, SSDSettings

    fields = SSDSettings.user_field_names()
    assert set(fields) == set(SSDSettings.model_fields) - set(INTERNAL_FIELDS)
    environ = {envs.env_name(name): "x" for name in fields}
    assert envs.setting_variables(fields, environ) == dict.fromkeys(fields, "x")
    assert resolve_settings(environ={"VLLM_SSD_FANOUT_BUDGET": "3"}).fanout_budget == 3
    with pytest.raises(SSDConfigError, match="VLLM_SSD_RUNTIME_DIR"):  # internal: no variable
        resolve_settings(environ={"VLLM_SSD_RUNTIME_DIR": "/tmp/x"})


def test_busy_poll_defaults_to_cuda_draft_devices_only():
    """A CPU draft server must not spin a core the target needs; a CUDA one polls by
    default; an explicit value wins on either device (0 turns polling off)."""
    def seconds(**values):
        return resolve_settings(values, environ={}).busy_poll_seconds()
    assert seconds(draft_device="cpu") == 0.0
    assert seconds(draft_device="cuda:1") > 0 and seconds(draft_device="cuda") > 0
    assert seconds(draft_device="cuda:1", busy_poll_ms=0) == 0.0
    assert seconds(draft_device="cuda:1", busy_poll_ms=3) == pytest.approx(0.003)
    settings = resolve_settings(environ={"VLLM_SSD_BUSY_POLL_MS": "5", "VLLM_SSD_DRAFT_DEVICE": "cpu"})
    assert settings.busy_poll_seconds() == pytest.approx(0.005)
    with pytest.raises(SSDConfigError, match="'busy_poll_ms'"):
        resolve_settings({"busy_poll_ms": -1}, environ={})
