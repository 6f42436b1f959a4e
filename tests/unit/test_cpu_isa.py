"""CPU tiers from the CPU's flags, capping them (draft_cpu_isa), and the setting's checks."""
import pytest
import torch

from vllm_ssd import cpu_isa
from vllm_ssd.cpu_isa import CpuIsa, cap_environment, detect_cpu_isa
from vllm_ssd.settings import SSDConfigError
from vllm_ssd.validation import check_cpu_isa


@pytest.mark.parametrize("amx,avx512,bf16,tier,fast_bf16", [
    (True, True, True, "amx", True),  # Sapphire Rapids
    (False, True, True, "avx512", True),  # AMD Zen 4
    (False, True, False, "avx512", False),  # Skylake-SP
    (False, False, False, "avx2", False),  # AMD Zen 2/3
])
def test_tier_follows_the_cpu_flags(monkeypatch, amx, avx512, bf16, tier, fast_bf16):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: avx512)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    isa = detect_cpu_isa()
    assert (isa.tier, isa.fast_bf16) == (tier, fast_bf16)
    assert isa.model_name


def test_a_cap_lowers_the_tier_and_never_raises_it():
    amx = CpuIsa("amx", True, "cpu")
    assert amx.capped("auto") is amx
    assert amx.capped("avx512") == CpuIsa("avx512", True, "cpu")
    assert amx.capped("avx2") == CpuIsa("avx2", False, "cpu")
    with pytest.raises(ValueError, match="offers avx2, not amx"):
        CpuIsa("avx2", False, "cpu").capped("amx")


def test_a_capped_server_caps_onednn_and_pytorch():
    amx = CpuIsa("amx", True, "cpu")
    assert cap_environment(amx, "auto") == {} and cap_environment(amx, "amx") == {}
    assert cap_environment(amx, "avx2") == {"ONEDNN_MAX_CPU_ISA": "AVX2",
                                            "ATEN_CPU_CAPABILITY": "avx2"}
    assert cap_environment(amx, "avx512")["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE_BF16"
    skylake = CpuIsa("avx512", False, "cpu")
    assert cap_environment(CpuIsa("amx", False, "x"), "avx512")["ONEDNN_MAX_CPU_ISA"] == \
        "AVX512_CORE"
    assert cap_environment(skylake, "avx2")["ATEN_CPU_CAPABILITY"] == "avx2"


def test_the_setting_rejects_a_tier_above_this_cpu(monkeypatch):
    monkeypatch.setattr(cpu_isa, "detect_cpu_isa", lambda: CpuIsa("avx2", False, "EPYC"))
    check_cpu_isa("avx2", "cpu")
    check_cpu_isa("amx", "cuda:1")  # a GPU draft ignores it
    with pytest.raises(SSDConfigError, match="'draft_cpu_isa' = 'amx'.*EPYC.*offers avx2"):
        check_cpu_isa("amx", "cpu")
