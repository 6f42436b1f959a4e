"""Offline LLM.generate with SSD: token-identical greedy output, both config routes,
and the hit rate reported identically by /metrics-style counters and the accessor."""
from __future__ import annotations

import pytest

from tests.conftest import PROMPTS, greedy, make_llm, ssd_config, token_ids
from vllm_ssd import get_ssd_metrics
from vllm_ssd.cpu_isa import detect_cpu_isa

FULL_BUILD = {"build_plan": "full", "build_deadline": float("inf")}


def metric_values(llm) -> dict[str, float]:
    return {m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}


@pytest.mark.parametrize("draft,mode,settings", [
    ("target", "ssd", FULL_BUILD),  # every draft accepted
    ("draft_noisy", "ssd", {}),  # partial acceptance, planned builds
    ("target", "ssd", {**FULL_BUILD, "prefill_chunk": 3}),  # prompts prefilled 3 tokens a round
    ("draft_qwen2", "ssd", {"backup": "neural"}),  # another family, almost nothing accepted
    ("draft_noisy", "sd", {}),  # the draft-after-outcome baseline
    # W8A8 int8 draft linears: the AMX kernel on AMX CPUs, oneDNN's int8 matmul with VNNI;
    # without VNNI start-up stops naming the setting
    ("draft_noisy_bf16", "ssd", {"draft_quantization": "int8"}),
    # a bf16 checkpoint on the AVX2 path (oneDNN and PyTorch capped to AVX2 in the server)
    ("draft_noisy_bf16", "ssd", {"draft_cpu_isa": "avx2"}),
])
def test_greedy_output_is_the_targets(tiny, reference_outputs, capfd, draft, mode, settings):
    config = ssd_config(tiny[draft], mode=mode, log_interval_s=0, **settings)
    if settings.get("draft_quantization") == "int8" and not detect_cpu_isa().exact_int8:
        with pytest.raises(Exception, match="'draft_quantization'.*VNNI no"):
            with make_llm(tiny["target"], speculative_config=config):
                pass
        return
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
        drafted = metric_values(llm)["vllm:spec_decode_num_draft_tokens"]
    assert outputs == reference_outputs(48)
    assert drafted > 0
    server_log = capfd.readouterr().err  # the draft server logs its kernel choice
    if settings.get("draft_cpu_isa") == "avx2":
        assert "isa avx2 (fast bf16: no)" in server_log
    if settings.get("draft_quantization") == "int8":
        assert "int8; GEMM probe" in server_log


def test_raw_custom_class_route_with_environment_settings(tiny, reference_outputs, monkeypatch):
    monkeypatch.setenv("VLLM_SSD_DRAFT_MODEL", str(tiny["draft_noisy"]))
    monkeypatch.setenv("VLLM_SSD_MODE", "sd")
    monkeypatch.setenv("VLLM_SSD_LOG_INTERVAL_S", "0")
    config = {"method": "custom_class", "model": "vllm_ssd.SSDProposer", "num_speculative_tokens": 3}
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
        metrics = metric_values(llm)
    assert outputs == reference_outputs(48)
    assert metrics["vllm:spec_decode_num_accepted_tokens"] > 0


def test_draft_equal_to_target_hits_and_both_readers_agree(tiny, reference_outputs):
    config = ssd_config(tiny["target"], log_interval_s=0, **FULL_BUILD)
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
        offline = get_ssd_metrics(llm)
        prometheus = metric_values(llm)
    assert outputs == reference_outputs(48)
    assert offline["lookups"] >= 40 and offline["hit_rate"] >= 0.95
    assert prometheus["vllm:ssd_cache_lookups"] == offline["lookups"]
    assert prometheus["vllm:ssd_cache_hits"] == offline["hits"]
    assert prometheus["vllm:spec_decode_num_accepted_tokens"] == offline["accepted_tokens"]


def test_uneven_lengths_and_max_tokens(tiny):
    """Rows finish at different steps; drafts never overrun max_tokens or max_model_len."""
    from vllm import SamplingParams

    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
              for n in (1, 2, 3, 5, 8, 13, 21, 200)]
    prompts = PROMPTS[:8]
    with make_llm(tiny["target"], max_model_len=256) as llm:
        expected = token_ids(llm.generate(prompts, params, use_tqdm=False))
    config = ssd_config(tiny["target"], log_interval_s=0, **FULL_BUILD)
    with make_llm(tiny["target"], max_model_len=256, speculative_config=config) as llm:
        outputs = token_ids(llm.generate(prompts, params, use_tqdm=False))
    assert outputs == expected
    assert [len(o) for o in outputs][:7] == [1, 2, 3, 5, 8, 13, 21]


def test_greedy_output_stays_the_targets_while_the_route_changes(tiny, reference_outputs):
    """mode auto with the cache route slowed on purpose: steps run both routes (the early
    window tries sd, which then measures faster) and the output is the target's."""
    config = ssd_config(tiny["draft_noisy"], mode="auto", log_interval_s=0, backup="neural",
                        sim_route_delay_ms={"ssd": 20.0})
    with make_llm(tiny["target"], speculative_config=config) as llm:
        outputs = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
        stats = get_ssd_metrics(llm)
    assert outputs == reference_outputs(48)
    assert stats["steps_sd"] > 0 and stats["steps_ssd"] > 0
