"""A zero-cost ``custom_class`` proposer: K fixed drafts per row at once (acceptance comes
from vLLM's synthetic rejection sampling). Its row in ``bench_gpu.py`` (method ``ceiling``)
is the most any proposer on this route can reach: timing only."""
from __future__ import annotations


class CeilingProposer:
    def __init__(self, vllm_config, *args, **kwargs):
        self.num_speculative_tokens = vllm_config.speculative_config.num_speculative_tokens

    def load_model(self, *args, **kwargs) -> None:
        """No model."""

    def propose(self, sampled_token_ids, *args, **kwargs) -> list[list[int]]:
        drafts = [1000 + position for position in range(self.num_speculative_tokens)]
        return [list(drafts) if row else [] for row in sampled_token_ids]
