"""Sampling stays exact: SSD's tokens follow the target's own distribution.

An 8-token model makes the exact distribution of generated tokens 3-5 computable
(512 cells, marginalised over tokens 1-2; SSD speculates from token 3 on). Thousands of seeded requests are sampled through
vLLM with SSD (Saguaro sampling, C < 1) and compared by a chi-squared test; the
same statistic must reject the draft model's distribution, so the test can fail.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.conftest import make_llm

PROMPT = [0, 3, 5, 1]
NUM_SAMPLES = 6000
P_VALUE_FLOOR = 1e-3


def exact_joint(model_dir, temperature: float, length: int = 5) -> np.ndarray:
    """P(t1..tL | PROMPT) at the given temperature, shape [V] * L."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    vocab = model.config.vocab_size
    joint = np.ones([vocab] * 0)
    for depth in range(length):
        prefixes = list(itertools.product(range(vocab), repeat=depth))
        ids = torch.tensor([PROMPT + list(p) for p in prefixes])
        with torch.no_grad():
            logits = model(ids).logits[:, -1].double()
        step = torch.softmax(logits / temperature, dim=-1).numpy().reshape([vocab] * depth + [vocab])
        joint = joint[..., None] * step
    return joint


def chi_squared_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs.ravel() * counts.sum()
    observed = counts.ravel().astype(np.float64)
    small = expected < 5  # pool sparse cells into one
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(stat / 2.0)))


@pytest.mark.parametrize("temperature,c", [(0.7, 0.5), (1.0, 0.3)])
def test_ssd_samples_follow_the_target_distribution(tiny, temperature, c):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    config = {"method": "ssd", "model": str(tiny["v8_draft"]), "num_speculative_tokens": 2,
              "saguaro_c": c, "log_interval_s": 0}
    params = [SamplingParams(temperature=temperature, max_tokens=5, ignore_eos=True, seed=i)
              for i in range(NUM_SAMPLES)]
    prompts = [TokensPrompt(prompt_token_ids=PROMPT)] * NUM_SAMPLES
    with make_llm(tiny["v8_target"], skip_tokenizer_init=True, max_num_seqs=256,
                  max_model_len=64, speculative_config=config) as llm:
        outputs = llm.generate(prompts, params, use_tqdm=False)
        accepted = sum(m.value for m in llm.get_metrics()
                       if m.name == "vllm:spec_decode_num_accepted_tokens")
    samples = np.array([o.outputs[0].token_ids for o in outputs])[:, 2:]
    assert samples.shape == (NUM_SAMPLES, 3)
    assert accepted > 0  # drafts were really verified, not bypassed
    counts = np.zeros([8, 8, 8])
    np.add.at(counts, tuple(samples.T), 1)
    target = exact_joint(tiny["v8_target"], temperature).sum(axis=(0, 1))
    draft = exact_joint(tiny["v8_draft"], temperature).sum(axis=(0, 1))
    assert chi_squared_p_value(counts, target) > P_VALUE_FLOOR
    assert chi_squared_p_value(counts, draft) < P_VALUE_FLOOR  # the test has power


def test_cpu_expand_kernel_writes_the_callers_dtype(tiny):
    """After SSD starts, vLLM's per-token temperature expansion is right (vLLM #55005)."""
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    from vllm_ssd.vllm_seam.cpu_sampling_fix import expand_kernel_impl

    out = torch.empty(5)
    expand_kernel_impl(out, torch.tensor([0.7, 0.0, 1.5]), torch.tensor([2, 3, 5]), 0, 1)
    assert out.tolist() == pytest.approx([0.7, 0.7, 1.0, 1.5, 1.5])
    config = {"method": "ssd", "model": str(tiny["draft"]), "num_speculative_tokens": 2,
              "log_interval_s": 0}
    with make_llm(tiny["target"], speculative_config=config):
        expanded = expand_batch_to_tokens(torch.tensor([0.7, 0.25]),
                                          torch.tensor([3, 4], dtype=torch.int32), 4,
                                          replace_from=0, replace_to=1)
        top_k = expand_batch_to_tokens(torch.tensor([5, 9], dtype=torch.int32),
                                       torch.tensor([1, 3], dtype=torch.int32), 3)
    assert expanded.tolist() == pytest.approx([0.7, 0.7, 0.7, 0.25])
    assert top_k.tolist() == [5, 9, 9]
