"""Bad SSD input stops start-up with one message that names the setting."""
from __future__ import annotations

import pytest

from tests.conftest import make_llm, ssd_config
from vllm_ssd.settings import SSDConfigError


@pytest.mark.parametrize("change,message", [
    ({"model": "/nonexistent/draft"}, r"'draft_model' = '/nonexistent/draft'.*no such model"),
    ({"num_speculative_tokens": 0}, r"'num_speculative_tokens' = 0"),
    ({"num_speculative_tokens": 64}, r"'num_speculative_tokens' = 64"),
    ({"fanout": 4}, r"unknown SSD setting 'fanout' \(from --speculative-config\)"),
    ({"mode": "turbo"}, r"invalid SSD setting 'mode' = 'turbo'"),
    ({"draft_device": "cuda:3"}, r"'draft_device' = 'cuda:3'"),
    ({"draft_cpus": "999"}, r"'draft_cpus' = '999'"),
])
def test_bad_settings(tiny, change, message):
    config = {**ssd_config(tiny["draft"]), **change}
    with pytest.raises(SSDConfigError, match=message):
        with make_llm(tiny["target"], speculative_config=config):
            pass


def test_vocabulary_mismatch(tiny):
    with pytest.raises(SSDConfigError, match=r"'draft_model'.*vocabulary \(576 tokens\) differs"):
        with make_llm(tiny["target"], speculative_config=ssd_config(tiny["draft_badvocab"])):
            pass


def test_missing_draft_in_the_raw_route(tiny):
    config = {"method": "custom_class", "model": "vllm_ssd.SSDProposer", "num_speculative_tokens": 2}
    with pytest.raises(SSDConfigError, match="missing SSD setting 'draft_model'.*VLLM_SSD_DRAFT_MODEL"):
        with make_llm(tiny["target"], speculative_config=config):
            pass


def test_unknown_environment_variable(tiny, monkeypatch):
    monkeypatch.setenv("VLLM_SSD_FANOUT_BUGDET", "4")
    with pytest.raises(SSDConfigError, match="unknown SSD setting VLLM_SSD_FANOUT_BUGDET"):
        with make_llm(tiny["target"], speculative_config=ssd_config(tiny["draft"])):
            pass
