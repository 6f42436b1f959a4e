"""Right-padding mixed extend passes to one query length (so that glue passes replay a
CUDA graph) and prefilling in chunks must not change any logits, now or in later passes
over the same KV."""
import numpy as np
import torch

from vllm_ssd.server.kv.block_manager import BlockManager
from vllm_ssd.server.draft_passes import DraftPasses
from vllm_ssd.server.device.model_runner import ModelRunner
from vllm_ssd.server.state import RequestTable

K = 4


def run_rounds(model_dir: str, pad_queries: bool) -> list[torch.Tensor]:
    runner = ModelRunner(model_dir, torch.device("cpu"), "float32", num_blocks=64,
                              block_size=4, max_positions=80, dummy=False)
    table = RequestTable(max_slots=3, max_len=64, max_drafts=K,
                         blocks=BlockManager(64, 4, reserved=1))
    passes = DraftPasses(runner, saguaro_c=1.0, seed=0, pad_queries=pad_queries)
    slots = np.arange(3)
    table.activate(slots, np.zeros(3, dtype=np.float32))
    rng = np.random.default_rng(3)
    prompt_lens = np.array([7, 12, 9])
    table.apply_deltas(slots, prompt_lens, rng.integers(4, 500, prompt_lens.sum()).astype(np.int32),
                       np.zeros(3, dtype=bool))
    outputs = [passes.extend(table, slots, np.ones(3, dtype=np.int64))]  # prefill: unpadded
    for num_drafts in ([4, 1, 0], [2, 4, 3], [0, 0, 4]):  # query lengths differ by row
        lens = np.array(num_drafts)
        drafts = np.full((3, K), -1, dtype=np.int32)
        drafts[np.arange(K)[None, :] < lens[:, None]] = rng.integers(4, 500, lens.sum())
        table.set_drafts(slots, drafts, lens, np.zeros(3, dtype=np.int64))
        outputs.append(passes.extend(table, slots, lens + 1))  # a glue pass
        accepted = lens // 2  # keep half the drafts and a new token
        delta = [list(drafts[r, :accepted[r]]) + [int(rng.integers(4, 500))] for r in slots]
        table.apply_deltas(slots, accepted + 1, np.concatenate(delta).astype(np.int32),
                           np.ones(3, dtype=bool))
    return outputs


def test_padding_changes_no_logits(tiny):
    plain = run_rounds(str(tiny["draft_qwen2"]), pad_queries=False)
    padded = run_rounds(str(tiny["draft_qwen2"]), pad_queries=True)
    assert len(plain) == len(padded) == 4
    for expected, got in zip(plain, padded):
        assert expected.shape == got.shape
        assert torch.allclose(expected, got, atol=1e-5)


def test_a_prefill_in_chunks_gives_the_same_logits(tiny):
    runner = ModelRunner(str(tiny["draft"]), torch.device("cpu"), "float32", num_blocks=64,
                              block_size=4, max_positions=80, dummy=False)
    tokens = np.random.default_rng(5).integers(4, 500, 23).astype(np.int32)
    logits = []
    for chunk in (None, 5):
        table = RequestTable(max_slots=1, max_len=64, max_drafts=K,
                             blocks=BlockManager(64, 4, reserved=1))
        passes = DraftPasses(runner, saguaro_c=1.0, seed=0)
        slot = np.array([0])
        table.activate(slot, np.zeros(1, dtype=np.float32))
        table.apply_deltas(slot, np.array([23]), tokens, np.zeros(1, dtype=bool))
        if chunk is not None:
            while table.num_tokens[0] - table.path_cached[0] > chunk:
                before = int(table.path_cached[0])
                passes.extend(table, slot, np.zeros(1, dtype=np.int64), np.array([chunk]))
                assert table.path_cached[0] == before + chunk
        logits.append(passes.extend(table, slot, np.array([2])))
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
