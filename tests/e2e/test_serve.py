"""`vllm serve` with `--speculative-config '{"method": "ssd", ...}'` behind the OpenAI API."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import PROMPTS

VLLM = shutil.which("vllm", path=str(Path(sys.executable).parent)) or "vllm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [VLLM, "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
               "--max-num-seqs", "8", "--served-model-name", "tiny", *extra]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited early:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise TimeoutError(log.read_text()[-3000:])


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def ssd_config(tiny) -> str:
    return json.dumps({"method": "ssd", "model": str(tiny["draft_noisy"]),
                       "num_speculative_tokens": 3, "log_interval_s": 1})


@pytest.fixture(scope="module")
def servers(tiny, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve")
    plain, plain_url = start_server(tiny["target"], [], logs / "plain.log")
    ssd, ssd_url = start_server(tiny["target"], ["--speculative-config", ssd_config(tiny)],
                                logs / "ssd.log")
    try:
        wait_ready(plain, plain_url, logs / "plain.log")
        wait_ready(ssd, ssd_url, logs / "ssd.log")
        yield {"plain": plain_url, "ssd": ssd_url, "ssd_log": logs / "ssd.log"}
    finally:
        stop(ssd)
        stop(plain)


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def complete(url: str, prompt: str, **kwargs) -> str:
    response = client(url).completions.create(model="tiny", prompt=prompt, max_tokens=40,
                                              temperature=0.0, **kwargs)
    return response.choices[0].text


def test_completions_match_the_plain_server(servers):
    for prompt in PROMPTS[:4]:
        assert complete(servers["ssd"], prompt) == complete(servers["plain"], prompt)


def test_chat_completions_match(servers):
    def chat(url):
        response = client(url).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "write a parser"}],
            max_tokens=40, temperature=0.0)
        return response.choices[0].message.content
    assert chat(servers["ssd"]) == chat(servers["plain"])


def test_streaming_matches(servers):
    stream = client(servers["ssd"]).completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=40, temperature=0.0, stream=True)
    streamed = "".join(chunk.choices[0].text for chunk in stream)
    assert streamed == complete(servers["plain"], PROMPTS[1])


def test_eight_concurrent_clients(servers):
    with ThreadPoolExecutor(8) as pool:
        ssd = list(pool.map(lambda p: complete(servers["ssd"], p), PROMPTS[:8]))
    plain = [complete(servers["plain"], p) for p in PROMPTS[:8]]
    assert ssd == plain


def ssd_counters(url: str) -> dict[str, float]:
    """SSD cache and vLLM draft counters of /metrics, summed over their labels."""
    text = requests.get(url + "/metrics", timeout=10).text
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("vllm:ssd_cache_", "vllm:spec_decode_num_drafts_total")):
            name = line.split()[0].split("{")[0]
            counters[name] = counters.get(name, 0.0) + float(line.split()[-1])
    return counters


def test_metrics_answer_with_ssd_counters(servers):
    """Counts this test's own traffic (it may run first or alone)."""
    before = ssd_counters(servers["ssd"])
    drafts = "vllm:spec_decode_num_drafts_total"
    # the log line comes once log_interval_s has passed; drafts come while the server's
    # switch speculates (earlier tests' traffic may have left it off until its next
    # exploration window)
    deadline = time.monotonic() + 60
    while True:
        complete(servers["ssd"], PROMPTS[0])
        logged = "SSD metrics: cache hit rate" in servers["ssd_log"].read_text()
        after = ssd_counters(servers["ssd"])
        drafted = after.get(drafts, 0.0) > before.get(drafts, 0.0)
        if (logged and drafted) or time.monotonic() > deadline:
            break
    lookups = "vllm:ssd_cache_lookups_total"
    assert after[lookups] > before.get(lookups, 0.0)
    assert 0 <= after["vllm:ssd_cache_hits_total"] <= after[lookups]
    assert drafted and logged


def test_vllm_bench_serve_completes_every_request(servers, tiny, tmp_path):
    """vLLM's own serving benchmark client (random dataset) against the SSD server."""
    from benchmarks.vllm_bench import run_vllm_bench

    before = ssd_counters(servers["ssd"])
    result = run_vllm_bench(servers["ssd"], "tiny", str(tiny["target"]), tmp_path / "bench.json",
                            num_prompts=8, input_len=32, output_len=24, concurrency=4,
                            timeout=300)
    assert (result["num_prompts"], result["completed"], result["failed"]) == (8, 8, 0)
    assert result["total_output_tokens"] == 8 * 24
    lookups = "vllm:ssd_cache_lookups_total"
    assert ssd_counters(servers["ssd"])[lookups] > before.get(lookups, 0.0)


@pytest.mark.parametrize("change,message", [
    ({"model": "/nonexistent/draft"},
     "vllm_ssd: invalid SSD setting 'draft_model' = '/nonexistent/draft'"),
    ({"fanout": 2}, "vllm_ssd: unknown SSD setting 'fanout' (from --speculative-config)"),
])
def test_bad_ssd_config_stops_serve_with_one_message(tiny, tmp_path, change, message):
    config = json.dumps({"method": "ssd", "model": str(tiny["draft"]),
                         "num_speculative_tokens": 3, **change})
    process, _ = start_server(tiny["target"], ["--speculative-config", config],
                              tmp_path / "bad.log")
    assert process.wait(timeout=180) != 0
    log = (tmp_path / "bad.log").read_text()
    assert message in log
    assert "Traceback" not in log and log.count("vllm_ssd:") == 1


def ssd_series(url: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=30).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("vllm:ssd_")}


@pytest.fixture
def own_ssd_server(tiny, tmp_path):
    """An SSD server of the test's own: its draft server is killed."""
    process, url = start_server(tiny["target"], ["--speculative-config", ssd_config(tiny)],
                                tmp_path / "ssd.log")
    try:
        wait_ready(process, url, tmp_path / "ssd.log")
        yield {"url": url, "pid": process.pid}
    finally:
        stop(process)


def test_ssd_series_stay_through_a_draft_server_restart(servers, own_ssd_server):
    import psutil

    url = own_ssd_server["url"]
    complete(url, PROMPTS[0])
    before = ssd_series(url)
    engine = psutil.Process(own_ssd_server["pid"])
    (draft,) = [p for p in engine.children(recursive=True)
                if any("vllm_ssd.server" in part for part in p.cmdline())]
    draft.kill()
    during = []
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(complete, url, PROMPTS[1])  # notices and restarts
        while not answer.done():
            during.append(ssd_series(url))
        assert answer.result() == complete(servers["plain"], PROMPTS[1])
    during.append(ssd_series(url))
    for scrape in during:
        assert set(before) <= set(scrape)
        for name in before:
            if name.endswith("_total"):
                assert scrape[name] >= before[name], name
