"""The README's "Use" commands, as written, on the real Qwen2.5-Coder pair (the hub ids
replaced by the locally built directories; a free port added): `vllm serve` without
--max-model-len answers a completion and a streaming chat request and its /metrics counts
lookups and hits; the offline snippet runs."""
from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_real_qwen import qwen_pair  # noqa: F401  (fixture)
from tests.e2e.test_serve import VLLM, client, free_port, ssd_counters, stop, wait_ready

README = Path(__file__).resolve().parents[2] / "README.md"
HUB_TARGET, HUB_DRAFT = "Qwen/Qwen2.5-Coder-1.5B-Instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct"
START_TIMEOUT_S = 1200  # torch.compile and vLLM's profiling pass on two AVX2 cores
pytestmark = pytest.mark.slow


def use_section_blocks(language: str) -> list[str]:
    use = README.read_text().split("## Use", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", use, flags=re.S)


def local(text: str, target: Path, draft: Path) -> str:
    return text.replace(HUB_DRAFT, str(draft)).replace(HUB_TARGET, str(target))


def test_the_readme_serve_command_answers_and_counts(qwen_pair, tmp_path):  # noqa: F811
    target, draft = qwen_pair
    command = local(use_section_blocks("bash")[0], target, draft).replace("\\\n", " ")
    argv = shlex.split(command)
    assert argv[:2] == ["vllm", "serve"] and "--max-model-len" not in argv
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen([VLLM, *argv[1:], "--port", str(port)], stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url, log, timeout=START_TIMEOUT_S)
        openai = client(url)
        model = str(target)
        text = openai.completions.create(model=model, prompt="def quicksort(items):",
                                         max_tokens=64).choices[0].text
        stream = openai.chat.completions.create(
            model=model, stream=True, max_tokens=32,
            messages=[{"role": "user", "content": "Write a Python hello world."}])
        chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
        counters = ssd_counters(url)
        deadline = time.monotonic() + 300
        while counters.get("vllm:ssd_cache_hits_total", 0.0) == 0 and time.monotonic() < deadline:
            openai.completions.create(model=model, prompt="def fibonacci(n):", max_tokens=64)
            counters = ssd_counters(url)
    finally:
        stop(process)
    assert text.strip() and "".join(chunks).strip() and len(chunks) > 1
    assert counters["vllm:ssd_cache_lookups_total"] > 0
    assert counters["vllm:ssd_cache_hits_total"] > 0, log.read_text()[-3000:]
    memory = re.search(r"draft server memory: resident ([\d.]+) GiB = runtime before loading "
                       r"([\d.]+) GiB \+ weights ([\d.]+) GiB \+ KV cache ([\d.]+) GiB",
                       log.read_text())
    resident, runtime, weights, kv = map(float, memory.groups())
    assert kv <= 2.0 and resident - runtime <= 1.1 * (weights + kv)  # the draft's budget


def test_the_readme_offline_snippet_runs(qwen_pair):  # noqa: F811
    target, draft = qwen_pair
    snippet = use_section_blocks("python")[1]
    assert "LLM(model=TARGET" in snippet and "max_model_len" not in snippet
    from vllm_ssd import get_ssd_metrics

    scope = {"TARGET": str(target), "DRAFT": str(draft),
             "prompts": ["def quicksort(items):", "import json\n"]}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    outputs, llm = scope["outputs"], scope["llm"]
    try:
        assert all(o.outputs[0].token_ids for o in outputs)
        assert get_ssd_metrics(llm)["lookups"] > 0
    finally:
        llm.llm_engine.engine_core.shutdown()
