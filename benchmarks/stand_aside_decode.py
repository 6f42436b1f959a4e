"""The target's decode rate after SSD stood aside on a CPU, against plain decoding on the
same cores: each configuration in its own process, vLLM's engine-core and worker processes
as a user gets them.

    python benchmarks/stand_aside_decode.py --out RESULT.json
    python benchmarks/stand_aside_decode.py --run plain|ssd|ssd_spin   (one configuration)

``plain``: the target on CPUs 0-1. ``ssd``: the target on CPU 0, the draft server on CPU 1,
generations until speculation stands aside (it hands CPU 1 to the target), then the same
measurement; ``ssd_spin`` the same with vLLM's spinning engine core (VLLM_SSD_QUIET_WAIT=0).
Decode rate: 32 tokens after the first four, greedy, eager engines. Per process, the CPU
time of each busy thread during the measurement.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
logger = logging.getLogger("stand_aside_decode")
PROMPT = "def quicksort(arr):\n    "
CONFIGS = ("plain", "ssd", "ssd_spin")


def pin(config: str) -> None:
    """Before vLLM is imported: the target's cores, as benchmarks/run_engine.py pins them."""
    cores = [0, 1] if config == "plain" else [0]
    os.sched_setaffinity(0, cores)
    os.environ.update(OMP_NUM_THREADS=str(len(cores)),
                      VLLM_CPU_OMP_THREADS_BIND=",".join(map(str, cores)))
    if config == "ssd_spin":
        os.environ["VLLM_SSD_QUIET_WAIT"] = "0"


def thread_ticks(pids: list[int]) -> dict[str, int]:
    ticks = {}
    for pid in pids:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                fields = open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()
                ticks[f"{pid}/{task}"] = int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            continue
    return ticks


def descendants(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(k) for k in kids] + [g for k in kids for g in descendants(int(k))]


def run(config: str) -> dict:
    pin(config)
    from vllm import LLM, SamplingParams

    from vllm_ssd import get_ssd_metrics
    from vllm_ssd.envs import models_dir

    models = models_dir()
    spec = None if config == "plain" else {
        "method": "ssd", "model": os.path.join(models, "qwen2.5-coder-0.5b-instruct"),
        "num_speculative_tokens": 4, "draft_cpus": "1", "log_interval_s": 0}
    llm = LLM(os.path.join(models, "qwen2.5-coder-1.5b-instruct"), max_model_len=1024,
              enforce_eager=True, speculative_config=spec)
    params = lambda n: SamplingParams(temperature=0, max_tokens=n, min_tokens=n, ignore_eos=True)
    generations = 0
    while spec is not None and generations < 12 and not get_ssd_metrics(llm).get("stood_aside"):
        llm.generate([PROMPT], params(48), use_tqdm=False)
        generations += 1
    pids = [os.getpid(), *descendants(os.getpid())]
    llm.generate([PROMPT], params(4), use_tqdm=False)
    before = thread_ticks(pids)
    start = time.perf_counter()
    llm.generate([PROMPT], params(4), use_tqdm=False)
    short = time.perf_counter() - start
    start = time.perf_counter()
    llm.generate([PROMPT], params(36), use_tqdm=False)
    long = time.perf_counter() - start
    after = thread_ticks(pids)
    busy = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 5}
    stood_aside = bool(spec is None or get_ssd_metrics(llm).get("stood_aside"))
    return {"config": config, "decode_tok_s": round(32 / (long - short), 3),
            "generations_before": generations, "stood_aside": stood_aside,
            "busy_thread_ticks": busy}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--run", choices=CONFIGS)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.run:
        print("RESULT " + json.dumps(run(args.run)), flush=True)
        return
    from benchmarks.provenance import provenance
    rows = []
    for config in args.configs.split(","):
        proc = subprocess.run([sys.executable, __file__, "--run", config],
                              capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        row = json.loads(lines[-1][7:]) if lines else {"config": config,
                                                       "error": proc.stderr[-2000:]}
        logger.info("%s", json.dumps(row))
        rows.append(row)
    result = {"provenance": provenance(vars(args)), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
