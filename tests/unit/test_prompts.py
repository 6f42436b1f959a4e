"""Benchmark prompts: each dataset's first prompts in file order, optionally only short ones."""
from benchmarks import prompts


def test_the_demo_takes_each_datasets_first_short_prompt():
    every = prompts.mixed(1)
    short = prompts.mixed(1, max_chars=1500)
    assert [name for name, _ in short] == list(prompts.DATASETS)
    assert all(len(prompt) <= 1500 for _, prompt in short)
    cnndm = prompts.load("cnndm", 80)
    assert dict(every)["cnndm"] == cnndm[0] and len(cnndm[0]) > 1500
    assert dict(short)["cnndm"] == next(p for p in cnndm if len(p) <= 1500)
    assert prompts.load("gsm8k", 3) == prompts.load("gsm8k", 3, max_chars=10 ** 6)
