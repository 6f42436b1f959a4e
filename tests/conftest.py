"""Shared test set-up: a CPU-friendly vLLM environment, tiny models, an LLM factory."""
from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from pathlib import Path

import pytest

# vLLM reads these at import time; tests never need more than this.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
for _name in [n for n in os.environ if n.startswith("VLLM_SSD_") and n != "VLLM_SSD_MODELS"]:
    del os.environ[_name]  # a developer's SSD settings must not leak into tests

TINY_ROOT = Path(os.environ.get("SSD_TEST_MODELS", Path(tempfile.gettempdir()) / "vllm-ssd-tiny"))
PROMPTS = [
    "def f(x):", "import json\nclass Decoder", "The quick brown fox jumps over the lazy",
    "a", "for i in range(10):\n    print(i", "x = [1, 2, 3]\ny = {", "# comment\n",
    "while True:\n    line = input()\n    if not line:\n        break",
    "return self.encode(obj)", "def parse_args(argv=None):\n    parser = argparse.",
]


@pytest.fixture(scope="module", autouse=True)
def process_state_restored():
    """Each test module leaves the test process as it found it: an in-process engine with
    SSD sets variables for the processes vLLM starts (``VLLM_SSD_QUIET_WAIT``) and pins
    this process to the target's cores; neither may reach the next module."""
    environment = dict(os.environ)
    affinity = os.sched_getaffinity(0)
    yield
    os.environ.clear()
    os.environ.update(environment)
    os.sched_setaffinity(0, affinity)


@pytest.fixture(scope="session")
def tiny() -> dict[str, Path]:
    import hashlib

    from tests import tiny_models

    recipe = hashlib.sha256(Path(tiny_models.__file__).read_bytes()).hexdigest()[:10]
    return tiny_models.build_all(TINY_ROOT / recipe)


@contextlib.contextmanager
def make_llm(model: Path | str, **kwargs):
    """An in-process vLLM engine, torn down (and its draft server stopped) on exit."""
    from vllm import LLM

    options = dict(max_model_len=512, max_num_seqs=8, seed=0, enforce_eager=True,
                   dtype="float32", disable_log_stats=False)
    options.update(kwargs)
    llm = LLM(model=str(model), **options)
    try:
        yield llm
    finally:
        # shut down now: a caller's variable may keep the LLM object alive, and a late
        # destructor would tear down the next engine's process groups
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def greedy(max_tokens: int = 32):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def token_ids(outputs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


def ssd_config(draft: Path | str, k: int = 4, **settings) -> dict:
    return {"method": "ssd", "model": str(draft), "num_speculative_tokens": k, **settings}


@pytest.fixture(scope="session")
def reference_outputs(tiny):
    """Greedy outputs of the tiny target alone, by max_tokens."""
    cache: dict[int, list[list[int]]] = {}

    def get(max_tokens: int = 32) -> list[list[int]]:
        if max_tokens not in cache:
            with make_llm(tiny["target"]) as llm:
                cache[max_tokens] = token_ids(llm.generate(PROMPTS, greedy(max_tokens),
                                                           use_tqdm=False))
        return cache[max_tokens]
    return get
