"""Draft-model passes over the request table: extend (prefill / catch-up / glue),
just-in-time drafting, and batched multi-step decoding of independent sequences."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vllm_ssd.saguaro.sampling import sample_draft_tokens
from vllm_ssd.server.device.model_runner import ModelRunner
from vllm_ssd.server.device_clock import DeviceClock, to_device
from vllm_ssd.server.segments import segment_offsets
from vllm_ssd.server.state import RequestTable


class DraftPasses:
    def __init__(self, runner: ModelRunner, saguaro_c: float, seed: int,
                 pad_queries: bool = False):
        """pad_queries: right-pad short extend passes to one query length, so that mixed
        glue passes replay a CUDA graph. Exact: causal attention keeps padding tokens out
        of every real token's view, and their KV slots lie beyond the cached path, to be
        overwritten before anything attends to them."""
        self.runner = runner
        self.pad_queries = pad_queries
        self.saguaro_c = saguaro_c
        self.generator = torch.Generator(device=runner.device).manual_seed(seed)
        self.clock = DeviceClock(runner.device)

    def sample(self, logits: torch.Tensor, temperature: np.ndarray, top_f: int) -> torch.Tensor:
        temps = to_device(temperature.astype(np.float32), logits.device)
        return sample_draft_tokens(logits, temps, top_f, self.saguaro_c, self.generator,
                                   any_random=bool((temperature > 0).any()))

    def extend(self, table: RequestTable, slots: np.ndarray, num_logits: np.ndarray,
               max_tokens: np.ndarray | None = None) -> torch.Tensor:
        """Runs each slot's path from its first uncached position (at most its last committed
        token) through all its drafts, or through ``max_tokens`` of it (a prefill chunk);
        returns logits [sum(num_logits), V] for the last ``num_logits`` positions of every
        slot, in slot order."""
        starts = table.first_uncached(slots)
        ends = table.num_tokens[slots] + table.num_drafts[slots]  # [R]
        if max_tokens is not None:
            ends = np.minimum(ends, starts + max_tokens)
        query_lens = ends - starts
        width = int(query_lens.max())
        padded = self.pad_queries and width <= table.max_drafts + 1
        run_lens = np.full_like(query_lens, width) if padded else query_lens
        table.ensure_blocks(slots, np.maximum(ends + 1, starts + run_lens))
        paths = table.path_tokens(slots)
        col = np.arange(width)[None, :]
        keep = col < run_lens[:, None]
        positions = np.minimum(starts[:, None] + col, paths.shape[1] - 1)
        input_ids = np.where(col < query_lens[:, None], paths[np.arange(len(slots))[:, None],
                                                               positions], 0)[keep]
        real_ends = np.cumsum(run_lens) - run_lens + query_lens  # [R] one past each last token
        logits_rows = np.repeat(real_ends, num_logits) - _ranks_from_end(num_logits)
        batch = self.runner.make_batch(input_ids, run_lens, starts,
                                       table.block_tables[slots], logits_rows)
        logits = self.runner.run(batch)
        table.mark_cached(slots, ends)
        return logits

    def jit(self, table: RequestTable, slots: np.ndarray, max_lens: np.ndarray,
            top_f: int) -> tuple[np.ndarray, np.ndarray]:
        """Drafts just in time: catch up each slot's KV, then decode up to max_lens tokens.
        Returns drafts [R, max_drafts] (-1 padded) and their lengths."""
        drafts = np.full((len(slots), table.max_drafts), -1, dtype=np.int32)
        depth = int(max_lens.max(initial=0))
        if len(slots) == 0 or depth == 0:
            return drafts, np.zeros(len(slots), dtype=np.int64)
        temps = table.temperature[slots]
        logits = self.extend(table, slots, np.ones(len(slots), dtype=np.int64))
        first = self.sample(logits, temps, top_f)
        num_tokens = table.num_tokens[slots]
        table.ensure_blocks(slots, num_tokens + table.max_drafts + 1)
        tokens = self.decode(table.block_tables[slots], num_tokens, first, temps, depth - 1,
                             top_f, stop=None)
        drafts[:, :depth] = tokens.cpu().numpy()
        lens = np.minimum(max_lens, depth)
        # the KV through each row's last draft but one: the last is fed only once accepted
        table.mark_cached(slots, num_tokens + np.maximum(lens, 1) - 1)
        drafts[np.arange(table.max_drafts)[None, :] >= lens[:, None]] = -1
        return drafts, lens

    def decode(self, block_tables: np.ndarray, start_positions: np.ndarray,
               first_tokens: torch.Tensor, temperature: np.ndarray, steps: int, top_f: int,
               stop: Callable[[], bool] | None, min_steps: int = 0) -> torch.Tensor:
        """Feeds first_tokens [N] at start_positions, then each sampled token, ``steps``
        times; every sequence has its own block table. Returns tokens [N, 1 + done]
        (the first tokens followed by the decoded ones; fewer if ``stop`` fires after
        ``min_steps``). With ``stop``, at most two steps are queued on the device ahead
        of the host, so that a stop takes effect within about one step."""
        num_seqs = len(start_positions)
        ones = np.ones(num_seqs, dtype=np.int64)
        rows = np.arange(num_seqs)
        columns = [first_tokens]
        marks = []
        for step in range(steps):
            if stop is not None and step >= min_steps and self._stop_while_queued(marks, stop):
                break
            batch = self.runner.make_batch(columns[-1], ones, start_positions + step,
                                           block_tables, rows)
            columns.append(self.sample(self.runner.run(batch), temperature, top_f))
            if stop is not None:
                marks.append(self.clock.mark())
        return torch.stack(columns, dim=1)

    def _stop_while_queued(self, marks: list, stop: Callable[[], bool]) -> bool:
        """Polls ``stop`` until the step before last has finished on the device."""
        while len(marks) >= 2 and not self.clock.done(marks[-2]):
            if stop():
                return True
        return stop()


def _ranks_from_end(counts: np.ndarray) -> np.ndarray:
    """For counts [2, 3] returns [2, 1, 3, 2, 1]: distance of each row from its segment end."""
    return np.repeat(counts, counts) - segment_offsets(counts)
