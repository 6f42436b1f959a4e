"""The draft server's memory follows its KV budget, not max_num_seqs x max_model_len: with
vLLM's defaults (256 sequences of 32,768 tokens) building the engine grows its resident
memory by no more than the weights plus the budget plus 10% (measured past the runtime's
one-time start-up, which does not depend on the model or the budget)."""
from __future__ import annotations

import json
import subprocess
import sys

from vllm_ssd.server.kv.budget import GIB

MEASURE = r"""
import json, sys
from vllm_ssd import protocol as P
from vllm_ssd.settings import SSDSettings
from vllm_ssd.server.factory import build_engine
from vllm_ssd.server.memory_report import resident_bytes as resident

import torch
from vllm_ssd.server.device.model_runner import ModelRunner

settings = SSDSettings(**json.loads(sys.argv[1]))
# the runtime's one-time start-up (kernel probes, oneDNN, ~0.25 GB) is not the draft's
ModelRunner(settings.draft_model, torch.device("cpu"), "auto", 16, 16, 64, dummy=False)
before = resident()
hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=4,
                target_vocab_size=512, max_model_len=32768, max_num_seqs=256)
engine = build_engine(settings, hello)
runner = engine.passes.runner
weights = sum(p.numel() * p.element_size() for p in runner.model.parameters())
print(json.dumps({"growth": resident() - before, "weights": weights,
                  "kv": runner.kv_cache.numel() * runner.kv_cache.element_size()}))
"""


def measure(settings: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(settings)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_resident_memory_is_weights_plus_budget(tiny):
    budget_gb = 0.25
    used = measure({"draft_model": str(tiny["target"]), "draft_device": "cpu",
                    "kv_cache_gb": budget_gb, "enforce_eager": True})
    assert used["kv"] <= budget_gb * GIB
    assert used["kv"] >= 0.9 * budget_gb * GIB  # the need (256 x 32,768 tokens) is larger
    assert used["growth"] <= 1.1 * (used["weights"] + budget_gb * GIB)


def test_the_default_budget_fits_beside_the_target(tiny):
    used = measure({"draft_model": str(tiny["target"]), "draft_device": "cpu",
                    "enforce_eager": True})
    assert used["kv"] <= 2 * GIB
    assert used["growth"] <= 1.1 * (used["weights"] + used["kv"])
