"""How many catch-up tokens (new prompts, resynchronised rows) one cache build prefills.

A fixed ``prefill_chunk`` (tokens) where the setting gives one or on a GPU; on a CPU,
by measured time: the chunk is what the draft prefills, at the rate measured over the last
chunks, in ``TARGET_STEP_SHARE`` of the target's measured step (the build runs while the
target verifies, so that much delays no reply), at least ``CHUNK_SECONDS`` and at most
``MAX_CHUNK_SECONDS``: a long prompt never holds the server much longer than one target
step, whatever the CPU.
"""
from __future__ import annotations

CHUNK_SECONDS = 0.05  # a prefill chunk's shortest time: half the shortest step deadline
TARGET_STEP_SHARE = 0.8  # of the target's step: a chunk within it delays no reply
MAX_CHUNK_SECONDS = 1.0  # the longest step deadline
FIRST_CHUNK = 32  # tokens, before any rate was measured
MIN_CHUNK, MAX_CHUNK = 8, 4096
RATE_WEIGHT = 0.5  # weight of the newest rate measurement


class PrefillPacer:
    def __init__(self, fixed_tokens: int | None, chunk_seconds: float = CHUNK_SECONDS):
        """fixed_tokens: the chunk in tokens (no measurement); None: sized by time."""
        self.fixed_tokens = fixed_tokens
        self.chunk_seconds = chunk_seconds
        self.tokens_per_s: float | None = None

    def chunk_tokens(self, target_step_s: float = 0.0) -> int:
        """target_step_s: the target's measured step (0 = unknown)."""
        if self.fixed_tokens is not None:
            return self.fixed_tokens
        if self.tokens_per_s is None:
            return FIRST_CHUNK
        seconds = min(max(self.chunk_seconds, TARGET_STEP_SHARE * target_step_s),
                      MAX_CHUNK_SECONDS)
        return int(min(max(self.tokens_per_s * seconds, MIN_CHUNK), MAX_CHUNK))

    def observe(self, tokens: int, seconds: float) -> None:
        """One prefill pass of ``tokens`` tokens took ``seconds`` (host-synchronous)."""
        if tokens <= 0 or seconds <= 0:
            return
        rate = tokens / seconds
        self.tokens_per_s = rate if self.tokens_per_s is None else \
            RATE_WEIGHT * rate + (1 - RATE_WEIGHT) * self.tokens_per_s
