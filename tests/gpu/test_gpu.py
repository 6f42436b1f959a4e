"""GPU tests (marker ``gpu``; skipped with the reason where no CUDA GPU is present).

The draft server runs on its own GPU when two are visible (else on the target's):
FlashAttention paged KV, CUDA graphs for decode and glue steps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import PROMPTS, greedy, make_llm, ssd_config, token_ids
from vllm_ssd import get_ssd_metrics

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU; none is visible")]


@pytest.fixture(scope="module", autouse=True)
def gpu_environment():
    """Set up when the first GPU test runs (never at collection), undone after the last:
    full-precision float32 matmuls (no TF32), since verification of K+1 tokens and one-token
    decoding must agree to the last bit of the argmax for greedy equality; and the plugin
    registered by hand, as on the GPU machine the package runs from PYTHONPATH (no entry
    point; ``register`` is idempotent)."""
    import vllm_ssd

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NVIDIA_TF32_OVERRIDE", "0")
        vllm_ssd.register()
        yield


def draft_device() -> str:
    return "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0"


def gpu_llm(model, **kwargs):
    options = dict(dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True)
    options.update(kwargs)
    return make_llm(model, **options)


@pytest.mark.parametrize("mode,draft", [("ssd", "cyclic_hd64"), ("ssd", "draft_hd64"),
                                        ("sd", "draft_hd64")])
def test_greedy_ssd_equals_the_target_on_gpu(tiny, mode, draft):
    """The cyclic target's greedy choices have wide margins (see tiny_models); with itself
    as draft every round hits, with a random draft most drafts are rejected."""
    with gpu_llm(tiny["cyclic_hd64"]) as llm:
        expected = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
    config = ssd_config(tiny[draft], mode=mode, draft_device=draft_device(),
                        draft_dtype="bfloat16", log_interval_s=0)
    with gpu_llm(tiny["cyclic_hd64"], speculative_config=config) as llm:
        outputs = token_ids(llm.generate(PROMPTS, greedy(48), use_tqdm=False))
        drafted = sum(m.value for m in llm.get_metrics()
                      if m.name == "vllm:spec_decode_num_draft_tokens")
    assert outputs == expected and drafted > 0


def test_server_restart_on_gpu(tiny):
    from tests.e2e.test_failure_and_lifecycle import draft_servers, generate_with_server_killed

    with gpu_llm(tiny["cyclic_hd64"]) as llm:
        expected = token_ids(llm.generate(PROMPTS, greedy(200), use_tqdm=False))
    config = ssd_config(tiny["draft_hd64"], draft_device=draft_device(),
                        draft_dtype="bfloat16", log_interval_s=0)
    with gpu_llm(tiny["cyclic_hd64"], speculative_config=config) as llm:
        outputs, killed = generate_with_server_killed(llm, 200)
        again = token_ids(llm.generate(PROMPTS, greedy(200), use_tqdm=False))
        alive = [p.pid for p in draft_servers()]
        restarts = get_ssd_metrics(llm)["restarts"]
    assert outputs == expected and again == expected
    assert alive and not set(alive) & set(killed) and restarts >= 1


def run_engine_steps(tiny, enforce_eager: bool,
                     strict_build: bool = False) -> tuple[list[list[int]], torch.Tensor]:
    """strict_build: a cache build that synchronises with the device raises."""
    from vllm_ssd import protocol as P
    from vllm_ssd.server.factory import build_engine
    from vllm_ssd.settings import SSDSettings

    settings = SSDSettings(draft_model=str(tiny["draft_hd64"]), draft_device=draft_device(),
                           draft_dtype="bfloat16", mode="ssd", build_plan="full",
                           build_deadline=float("inf"), enforce_eager=enforce_eager)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=3,
                    target_vocab_size=512, max_model_len=256, max_num_seqs=4)
    engine = build_engine(settings, hello)
    slots = np.array([0, 1])
    deltas = [[1, 40, 41, 42, 43], [1, 7, 8, 9, 10, 11, 12, 13]]
    new = [P.NewRequest(slot=int(s), temperature=0.0) for s in slots]
    results = []
    for step in range(6):
        flat = [t for d in deltas for t in d]
        request = P.StepRequest(seq=step, new_requests=new if step == 0 else [], finished_slots=[],
                                slots=P.pack(slots), num_new_tokens=P.pack([len(d) for d in deltas]),
                                new_tokens=P.pack(flat), is_step_delta=P.pack([step > 0] * 2, np.uint8),
                                max_drafts=P.pack([3, 3]))
        reply = engine.step(request)
        torch.cuda.set_sync_debug_mode("error" if strict_build else "default")
        try:
            engine.build(lambda: False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        drafts, lens = P.unpack(reply.draft_tokens).tolist(), P.unpack(reply.num_drafts)
        results.append(drafts)
        # pretend the target accepted the first draft of each row and sampled token 5
        ends = np.cumsum(lens)
        deltas = [drafts[e - n:e - n + 1] + [5] if n else [5] for e, n in zip(ends, lens)]
    runner = engine.passes.runner
    assert (runner.graphs is not None) == (not enforce_eager)  # FlashAttention + graphs used
    batch = runner.make_batch(np.array([3, 4]), np.ones(2, dtype=np.int64), np.array([9, 14]),
                              engine.table.block_tables[slots], np.arange(2))
    return results, runner.run(batch).cpu()


def test_cuda_graph_and_eager_paths_agree(tiny):
    graph_drafts, graph_logits = run_engine_steps(tiny, enforce_eager=False)
    eager_drafts, eager_logits = run_engine_steps(tiny, enforce_eager=True)
    assert graph_drafts == eager_drafts
    assert torch.allclose(graph_logits, eager_logits, atol=2e-2, rtol=0)


def test_cache_build_never_waits_for_the_device(tiny):
    """The build only queues work; its results are fetched in the next step's one sync."""
    drafts, _ = run_engine_steps(tiny, enforce_eager=False, strict_build=True)
    assert sum(len(d) for d in drafts[1:]) > 0


def test_draft_device_cuda_without_index(tiny):
    """``draft_device="cuda"`` means the current device (set_device needs an index)."""
    from vllm_ssd import protocol as P
    from vllm_ssd.server.factory import build_engine
    from vllm_ssd.settings import SSDSettings

    settings = SSDSettings(draft_model=str(tiny["draft_hd64"]), draft_device="cuda",
                           draft_dtype="bfloat16", enforce_eager=True)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=3,
                    target_vocab_size=512, max_model_len=256, max_num_seqs=2)
    engine = build_engine(settings, hello)
    assert engine.passes.runner.device == torch.device("cuda", torch.cuda.current_device())
