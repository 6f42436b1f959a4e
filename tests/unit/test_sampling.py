"""Draft sampling and Saguaro sampling (sigma_{F,C})."""
import torch

from vllm_ssd.saguaro.sampling import draft_probs, saguaro_scale, sample_draft_tokens


def test_saguaro_scale_renormalises_and_scales_top_f():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    scaled = saguaro_scale(probs, top_f=2, c=0.5)
    assert torch.allclose(scaled.sum(-1), torch.ones(1))
    # top-2 shrink by exactly c relative to the rest
    assert torch.allclose(scaled[0, 0] / scaled[0, 2], torch.tensor(0.5 * 0.5 / 0.15))
    assert torch.allclose(scaled[0, 2] / scaled[0, 3], torch.tensor(0.15 / 0.05))
    assert torch.equal(saguaro_scale(probs, 2, 1.0), probs)


def test_greedy_rows_take_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    tokens = sample_draft_tokens(logits, torch.zeros(2), 1, 1.0, None, any_random=False)
    assert tokens.tolist() == [1, 0]


def test_sampled_rows_follow_the_saguaro_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]])).repeat(20000, 1)
    temps = torch.ones(20000)
    generator = torch.Generator().manual_seed(1)
    tokens = sample_draft_tokens(logits, temps, 1, 0.5, generator, any_random=True)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    expected = draft_probs(logits[:1], temps[:1], 1, 0.5)[0]
    assert torch.allclose(freq, expected, atol=0.015)
    assert expected[0] < 0.6  # the top token was scaled down
