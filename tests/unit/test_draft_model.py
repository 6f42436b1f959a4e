"""The draft server's model code matches Hugging Face transformers (Llama, Qwen2, Qwen3)."""
import numpy as np
import pytest
import torch

from vllm_ssd.server.device.model_runner import ModelRunner


@pytest.mark.parametrize("name", ["target", "draft_qwen2", "draft_qwen3"])
def test_paged_prefill_extend_and_batched_decode_match_transformers(tiny, name):
    import transformers

    runner = ModelRunner(str(tiny[name]), torch.device("cpu"), "auto", num_blocks=64,
                              block_size=4, max_positions=512, dummy=False)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny[name]).eval()
    ids = np.random.default_rng(0).integers(4, 500, size=23)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)[None]).logits[0]
    tables = np.full((2, 16), -1)
    tables[0, :6] = [5, 9, 2, 11, 3, 7]  # scattered blocks
    tables[1, :6] = [20, 21, 22, 23, 24, 25]
    # two sequences prefilled together (lengths 10 and 15)
    batch = runner.make_batch(np.concatenate([ids[:10], ids[:15]]), np.array([10, 15]),
                              np.array([0, 0]), tables, np.array([9, 24]))
    logits = runner.run(batch)
    assert torch.allclose(logits[0], ref[9], atol=1e-4)
    assert torch.allclose(logits[1], ref[14], atol=1e-4)
    # sequence 0 catches up 5 tokens, then both decode one token at a time
    batch = runner.make_batch(ids[10:15], np.array([5]), np.array([10]), tables[:1], np.array([4]))
    assert torch.allclose(runner.run(batch)[0], ref[14], atol=1e-4)
    for pos in range(15, 23):
        batch = runner.make_batch(np.array([ids[pos]] * 2), np.ones(2, dtype=np.int64),
                                  np.array([pos, pos]), tables, np.array([0, 1]))
        logits = runner.run(batch)
        assert torch.allclose(logits, ref[pos].expand(2, -1), atol=1e-4)


def test_copy_blocks_duplicates_kv(tiny):
    runner = ModelRunner(str(tiny["draft"]), torch.device("cpu"), "auto", num_blocks=8,
                              block_size=4, max_positions=64, dummy=True)
    runner.kv_cache[:, :, 2].fill_(3.0)
    runner.copy_blocks(np.array([2]), np.array([5]))
    assert torch.equal(runner.kv_cache[:, :, 5], runner.kv_cache[:, :, 2])


@pytest.mark.parametrize("name", ["draft_qwen3", "draft_qwen2", "draft"])
def test_fused_kernels_match_the_pytorch_ops(tiny, name):
    """vLLM's fused rms_norm / add + rms_norm / in-place rotary / silu_and_mul (the loader
    installs them where vLLM's extension runs them) against the PyTorch paths checked
    against transformers above. Qwen3 rotates normed q/k; the others rotate strided views
    of the qkv output."""
    import vllm._custom_ops  # noqa: F401  (loads torch.ops._C)

    from vllm_ssd.server.model.kernels import Kernels

    runner = ModelRunner(str(tiny[name]), torch.device("cpu"), "auto",
                              num_blocks=32, block_size=4, max_positions=128, dummy=False)
    assert runner.model.layers[0].mlp.kernels.ops is torch.ops._C  # what the loader chose
    ids = np.random.default_rng(1).integers(4, 500, size=11)
    tables = np.arange(16).reshape(1, 16)

    def logits(kernels: Kernels) -> torch.Tensor:
        runner.model.use_kernels(kernels)
        batch = runner.make_batch(ids, np.array([11]), np.array([0]), tables, np.arange(11))
        return runner.run(batch)  # [1, vocab]
    plain = logits(Kernels())
    fused = logits(Kernels(torch.ops._C))
    assert torch.allclose(fused, plain, atol=1e-4)
