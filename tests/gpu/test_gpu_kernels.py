"""GPU draft kernels: the fused rotary + KV-cache write matches the unfused ops, and CUDA
graph steps (fused kernel, one FA3 split) give the logits of eager unfused steps
(marker ``gpu``; skipped with the reason where no CUDA GPU is present)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU; none is visible")]


def test_fused_rope_and_cache_matches_the_reference():
    from vllm_ssd.server.model.rope_cache_cuda import fused_rope_and_cache, rope_and_cache_reference

    device = torch.device("cuda")
    fused = fused_rope_and_cache(device, torch.bfloat16, 64)
    assert fused is not None  # Triton builds it on this GPU
    generator = torch.Generator().manual_seed(1)
    qkv = torch.randn(37, 14 + 2 * 2, 64, generator=generator).to(device, torch.bfloat16)
    positions = torch.randint(0, 500, (37,), generator=generator).to(device)
    angles = torch.rand(512, 32, generator=generator) * 6.28
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1).to(device, torch.bfloat16)
    slots = torch.randperm(40 * 16, generator=generator)[:37].to(device)
    outs = []
    for write in (fused, rope_and_cache_reference):
        copy = qkv.clone()
        caches = torch.zeros(2, 40, 16, 2, 64, dtype=torch.bfloat16, device=device)
        write(copy[:, :14], copy[:, 14:16], copy[:, 16:], positions, cos_sin, caches[0],
              caches[1], slots)
        outs.append(torch.cat((copy[:, :14].flatten(), caches.flatten())).float())
    assert torch.allclose(outs[0], outs[1], atol=2e-2, rtol=2e-2)


def _logits(runner, ids, rows: int, context: int) -> torch.Tensor:
    tables = 1 + np.arange(rows * 8).reshape(rows, 8)
    batch = runner.make_batch(ids[:rows], np.ones(rows, dtype=np.int64), np.full(rows, context),
                              tables, np.arange(rows))
    return runner.run(batch)  # [rows, V]


def test_graph_steps_give_the_logits_of_eager_unfused_steps(tiny):
    from vllm_ssd.server.device.model_runner import ModelRunner

    runner = ModelRunner(str(tiny["draft_hd64"]), torch.device("cuda"), "bfloat16",
                              num_blocks=128, block_size=16, max_positions=256, dummy=False)
    assert runner.backend.rope_and_cache is not None
    ids = np.random.default_rng(0).integers(4, 500, size=64)
    for row in range(4):  # four sequences of 40 tokens, prefilled eagerly (block 0 is kept
        tables = np.arange(1 + row * 8, 1 + row * 8 + 8).reshape(1, 8)  # for graph padding)
        runner.run(runner.make_batch(ids[:40], np.array([40]), np.array([0]), tables,
                                     np.array([39])))
    eager = _logits(runner, ids, 4, 40)
    fused = runner.backend.rope_and_cache
    runner.backend.rope_and_cache = None
    eager_unfused = _logits(runner, ids, 4, 40)
    runner.backend.rope_and_cache = fused
    runner.capture_graphs({1: 4}, max_blocks=8)
    graph = _logits(runner, ids, 4, 40)
    for logits in (eager, graph):
        assert torch.allclose(logits, eager_unfused, atol=5e-2, rtol=5e-2)
        assert torch.equal(logits.argmax(-1), eager_unfused.argmax(-1))


def test_every_glue_length_replays_a_graph(tiny):
    """A glue pass after k accepted drafts runs k + 1 tokens (1 .. K + 1): each length
    replays a CUDA graph (no eager forward), for one row and for several."""
    from vllm_ssd.server.device.cuda_graphs import graph_rows
    from vllm_ssd.server.device.model_runner import ModelRunner

    k, max_slots = 4, 4
    runner = ModelRunner(str(tiny["draft_hd64"]), torch.device("cuda"), "bfloat16",
                         num_blocks=128, block_size=16, max_positions=256, dummy=False)
    runner.capture_graphs(graph_rows(max_slots, 2, k), max_blocks=8)
    replays, run_graph = [], runner.graphs.run

    def counted(batch):
        logits = run_graph(batch)
        replays.append(logits is not None)
        return logits
    runner.graphs.run = counted
    ids = np.random.default_rng(0).integers(4, 500, size=64)
    tables = 1 + np.arange(max_slots * 8).reshape(max_slots, 8)
    for query_len in range(1, k + 2):
        for rows in (1, 3):
            runner.run(runner.make_batch(ids[:rows * query_len], np.full(rows, query_len),
                                         np.full(rows, 40), tables[:rows],
                                         np.arange(rows * query_len)))
    assert replays == [True] * (2 * (k + 1))
