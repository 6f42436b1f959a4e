"""Serving benchmark on the CPU: `vllm serve` with SSD against the same server without
speculation, under a streaming OpenAI-client load at several concurrencies; with
--vllm-bench also under vLLM's own client (`vllm bench serve --dataset-name random`).

Placement: SSD's target (API server + engine) on CPU 0, its draft server on CPU 1; plain
decoding runs with both CPUs and with CPU 0 only.

    python benchmarks/bench_serving.py            # writes benchmarks/results/cpu/serving.{json,md}
    python benchmarks/bench_serving.py --vllm-bench   # + vLLM's client, rows "vllm bench serve"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks import prompts as prompt_sets  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from benchmarks.vllm_bench import VLLM, run_vllm_bench  # noqa: E402

SERVERS = {  # name -> (cpus of the vllm process tree, speculative config or None)
    "plain (2 cores)": ("0,1", None),
    "plain (1 core)": ("0", None),
    "ssd (1+1 cores)": ("0", "ssd"),
}


def start(name: str, target: str, draft: str, port: int, log: Path) -> subprocess.Popen:
    cpus, method = SERVERS[name]
    command = ["taskset", "-c", cpus, VLLM, "serve", target, "--host", "127.0.0.1",
               "--port", str(port), "--max-model-len", "2048", "--max-num-seqs", "8",
               "--served-model-name", "target", "--no-enable-prefix-caching"]
    if method:
        command += ["--speculative-config", json.dumps(
            {"method": "ssd", "model": draft, "num_speculative_tokens": 4, "fanout_budget": 6,
             "draft_cpus": "1", "log_interval_s": 30})]
    env = {**os.environ, "OMP_NUM_THREADS": str(len(cpus.split(",")))}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def one_request(url: str, prompt: str, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused", timeout=600, max_retries=0)
    start = time.perf_counter()
    stamps = []
    stream = client.chat.completions.create(
        model="target", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0.0, stream=True, stream_options={"include_usage": True})
    tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter() - start)
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return {"ttft": stamps[0], "end": stamps[-1], "tokens": tokens}


def load(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: one_request(url, p, max_tokens), prompts))
    wall = time.perf_counter() - start
    tpot = [(r["end"] - r["ttft"]) / (r["tokens"] - 1) for r in results if r["tokens"] > 1]
    return {"concurrency": concurrency, "requests": len(results), "wall_s": wall,
            "output_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_ms": 1000 * float(np.percentile([r["ttft"] for r in results], 50)),
            "ttft_p99_ms": 1000 * float(np.percentile([r["ttft"] for r in results], 99)),
            "tpot_p50_ms": 1000 * float(np.percentile(tpot, 50)),
            "tpot_p99_ms": 1000 * float(np.percentile(tpot, 99))}


def vllm_bench_load(url: str, tokenizer: str, concurrency: int, args) -> dict:
    """The same load shape through vLLM's client: random prompts of --vllm-bench-input-len
    tokens, --max-tokens out, as many requests as the project's client sends."""
    with tempfile.TemporaryDirectory() as tmp:
        result = run_vllm_bench(url, "target", tokenizer, Path(tmp) / "result.json",
                                num_prompts=4 * args.per_dataset,
                                input_len=args.vllm_bench_input_len,
                                output_len=args.max_tokens, concurrency=concurrency)
    if result["failed"] or result["completed"] != result["num_prompts"]:
        raise RuntimeError(f"vllm bench serve: {result['failed']} failed, "
                           f"{result['completed']} of {result['num_prompts']} completed")
    return {"client": "vllm bench serve", "concurrency": concurrency,
            "requests": result["completed"], "wall_s": result["duration"],
            "output_tok_s": result["output_throughput"],
            "ttft_p50_ms": result["median_ttft_ms"], "ttft_p99_ms": result["p99_ttft_ms"],
            "tpot_p50_ms": result["median_tpot_ms"], "tpot_p99_ms": result["p99_tpot_ms"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| server | client | concurrency | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r.get('client', 'project')} | {r['concurrency']} | {r['output_tok_s']:.2f} | "
                     f"{r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {r['tpot_p50_ms']:.0f} | "
                     f"{r['tpot_p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--per-dataset", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--vllm-bench", action="store_true",
                        help="also load each server with vLLM's own client (random dataset)")
    parser.add_argument("--vllm-bench-input-len", type=int, default=128,
                        help="prompt tokens of vLLM's client's random requests")
    parser.add_argument("--models", default=os.environ.get("VLLM_SSD_MODELS", "~/.cache/vllm-ssd-models"))
    parser.add_argument("--out", default=str(HERE / "results" / "cpu"))
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    return parser.parse_args()


def serve_rows(index: int, name: str, target: str, draft: str, prompts: list[str],
               args) -> list[dict]:
    """One server: warm-up, then each concurrency with the project's client (and vLLM's)."""
    out, port = Path(args.out), 8400 + index
    url = f"http://127.0.0.1:{port}"
    tag = f"-{args.tag}" if args.tag else ""
    process = start(name, target, draft, port, out / "logs" / f"serve{tag}-{index}.log")
    rows = []
    try:
        wait(url, process)
        load(url, prompts[:2], 2, 8)  # warm-up
        for concurrency in map(int, args.concurrency.split(",")):
            measured = [{"server": name, "client": "project",
                         **load(url, prompts, concurrency, args.max_tokens)}]
            if args.vllm_bench:
                measured.append({"server": name, **vllm_bench_load(url, target, concurrency, args)})
            for row in measured:
                print(json.dumps(row), flush=True)
            rows.extend(measured)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return rows


def main() -> None:
    args = parse_args()
    models = Path(args.models).expanduser()
    target, draft = (str(models / f"qwen2.5-coder-{s}-instruct") for s in ("1.5b", "0.5b"))
    prompts = [p for _, p in prompt_sets.mixed(args.per_dataset)]
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    record = provenance({**vars(args), "target": target, "draft": draft,
                         "servers": {name: list(server) for name, server in SERVERS.items()}})
    rows = [row for index, name in enumerate(SERVERS)
            for row in serve_rows(index, name, target, draft, prompts, args)]
    tag = f"-{args.tag}" if args.tag else ""
    (out / f"serving{tag}.json").write_text(json.dumps({"provenance": record, "rows": rows},
                                                       indent=1))
    (out / f"serving{tag}.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
