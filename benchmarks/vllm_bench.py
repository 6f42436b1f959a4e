"""vLLM's own serving benchmark client (`vllm bench serve`, random dataset) against a
running OpenAI-compatible server; its `--save-result` JSON, parsed.

    run_vllm_bench("http://127.0.0.1:8000", "target", TOKENIZER_DIR, out_dir / "bench.json")
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

VLLM = shutil.which("vllm", path=str(Path(sys.executable).parent)) or "vllm"


def bench_command(url: str, model: str, tokenizer: str, result: Path, num_prompts: int,
                  input_len: int, output_len: int, concurrency: int) -> list[str]:
    return [VLLM, "bench", "serve", "--backend", "vllm", "--base-url", url, "--model", model,
            "--tokenizer", str(tokenizer), "--dataset-name", "random",
            "--random-input-len", str(input_len), "--random-output-len", str(output_len),
            "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
            "--ignore-eos", "--temperature", "0", "--seed", "0", "--save-result",
            "--result-dir", str(result.parent), "--result-filename", result.name]


def run_vllm_bench(url: str, model: str, tokenizer: str, result: Path, num_prompts: int = 8,
                   input_len: int = 128, output_len: int = 64, concurrency: int = 1,
                   timeout: float = 1800) -> dict:
    """Runs the client to completion and returns its result JSON (``completed``,
    ``failed``, ``output_throughput``, ``median_tpot_ms``, ...); raises with its output
    when it exits non-zero."""
    command = bench_command(url, model, tokenizer, result, num_prompts, input_len, output_len,
                            concurrency)
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"vllm bench serve exited {run.returncode}:\n"
                           f"{(run.stdout + run.stderr)[-3000:]}")
    return json.loads(result.read_text())
