"""Draft sampling, including Saguaro sampling (Def. 14).

Saguaro sampling draws drafts from sigma_{F,C}(q): the draft distribution q with
its top-F probabilities multiplied by C <= 1 and renormalised. Lowering the mass
of the tokens the speculation cache will hold raises their share of the residual
max(0, p - q), so recovery tokens land in the cache more often (at the cost of
acceptance). Whatever distribution the drafts come from, vLLM verifies
``custom_class`` drafts as point masses, which keeps the output exact.
"""
from __future__ import annotations

import torch


def saguaro_scale(probs: torch.Tensor, top_f: int, c: float) -> torch.Tensor:
    """sigma_{F,C}: top-F entries of each row of probs [R, V] times c, renormalised."""
    if c >= 1.0 or top_f <= 0:
        return probs
    values, index = probs.topk(min(top_f, probs.shape[-1]), dim=-1)
    scaled = probs.scatter(-1, index, values * c)
    return scaled / scaled.sum(dim=-1, keepdim=True)


def draft_probs(logits: torch.Tensor, temperature: torch.Tensor, top_f: int,
                c: float) -> torch.Tensor:
    """The distribution drafts are sampled from, [R, V], for rows with temperature > 0."""
    scaled_logits = logits / temperature.clamp(min=1e-5).unsqueeze(-1)
    return saguaro_scale(torch.softmax(scaled_logits, dim=-1), top_f, c)


def sample_draft_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_f: int,
                        c: float, generator: torch.Generator | None,
                        any_random: bool) -> torch.Tensor:
    """One token per row of logits [R, V] (float32); greedy where temperature == 0.

    Sampling uses the exponential race argmax(p / E), E ~ Exp(1), which needs no
    host synchronisation; ``any_random`` (known on the host) skips it for greedy batches.
    """
    greedy = logits.argmax(dim=-1)
    if not any_random:
        return greedy
    is_random = temperature > 0  # [R]
    probs = draft_probs(logits, temperature, top_f, c)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(is_random, sampled, greedy)
