"""The draft server's rounds on its own device, with a simulated target: what a second GPU
sees. Each round: the server's step (outcomes -> lookup -> backup -> reply), then the cache
build for the next round while a simulated target "verifies" for --target-step-ms. Reports
per batch size the build's device time (glue, branch steps), how deep it got, the server's
step time (a hit's round trip without IPC: mostly the wait for the build's last step) and,
with --kernels, where the device time of a round goes.

    python3 benchmarks/gpu/profile_build.py --draft benchmarks/gpu/configs/qwen2.5-0.5b \
        --dummy --device cuda --batch-sizes 1,4,16,64 --target-step-ms 7 --out FILE.json

Timing only with dummy weights: acceptance follows --acceptance, hits are simulated
(``sim_hit_rate``), as in ``bench_gpu.py``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.provenance import provenance  # noqa: E402
from vllm_ssd import protocol as P  # noqa: E402
from vllm_ssd.settings import SSDSettings  # noqa: E402

K = 4


def make_engine(args, batch_size: int):
    from vllm_ssd.server.factory import build_engine

    settings = SSDSettings(draft_model=args.draft, draft_device=args.device, mode="ssd",
                           load_format="dummy" if args.dummy else "auto",
                           sim_hit_rate=args.sim_hit_rate, fanout_budget=args.fanout_budget,
                           build_plan=args.plan, enforce_eager=args.eager)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                    target_vocab_size=0, max_model_len=args.context + 512,
                    max_num_seqs=batch_size)
    from vllm_ssd.arch import ModelArch
    hello.target_vocab_size = ModelArch.from_dir(args.draft).vocab_size
    return build_engine(settings, hello)


class FakeTarget:
    """Accepts each draft position with the given per-position rates; a random bonus."""

    def __init__(self, rates: list[float], vocab: int, seed: int = 0):
        self.rates = np.array(rates)
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def outcomes(self, num_drafts: np.ndarray, drafts: np.ndarray):
        """num_drafts [B], drafts [sum(num_drafts)] -> (lens [B], tokens [sum(lens)]): each
        row's accepted drafts and a random bonus token."""
        rows = len(num_drafts)
        accept = self.rng.random((rows, K)) < self.rates[None, :K]
        num_accepted = np.minimum(np.cumprod(accept, axis=1).sum(axis=1), num_drafts)  # [B]
        lens = num_accepted + 1
        column = np.arange(int(lens.max()))[None, :]
        tokens = np.zeros((rows, column.shape[1]), dtype=np.int64)  # [B, max(lens)]
        if drafts.size:
            starts = np.cumsum(num_drafts) - num_drafts
            index = np.minimum(starts[:, None] + column, drafts.size - 1)
            tokens = np.where(column < num_accepted[:, None], drafts[index], 0)
        tokens[np.arange(rows), num_accepted] = self.rng.integers(10, self.vocab - 1, rows)
        return lens, tokens[column < lens[:, None]]


HOST_TIMED = {  # host time of these calls per round (--host-breakdown)
    "engine": ("step", "build", "_speculate", "_lookup", "_lifecycle", "_observe_build"),
    "plans": ("choose",),
    "builder": ("collect", "release_branches", "prefill_chunks", "fork", "decode_branches"),
    "passes": ("extend", "decode", "jit", "sample"),
    "runner": ("run", "make_batch", "copy_blocks"),
    "table": ("apply_deltas", "set_drafts", "ensure_blocks", "path_tokens"),
    "stats": ("observe_step", "observe_lookups", "snapshot"),
}


def time_host_calls(engine) -> dict[str, float]:
    """Wraps the methods in HOST_TIMED on their instances; returns the seconds table."""
    owners = {"engine": engine, "builder": engine.builder, "passes": engine.passes,
              "runner": engine.passes.runner, "table": engine.table, "stats": engine.stats,
              "plans": engine.plans}
    seconds: dict[str, float] = {}

    def wrap(name, method):
        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return timed
    for owner, names in HOST_TIMED.items():
        for name in names:
            setattr(owners[owner], name, wrap(f"{owner}.{name}", getattr(owners[owner], name)))
    return seconds


def run_batch(args, batch_size: int, trace: str | None = None) -> dict:
    import torch

    engine = make_engine(args, batch_size)
    rounds = Rounds(args, engine, batch_size)
    host_seconds = time_host_calls(engine) if args.host_breakdown else None
    rounds.play(args.warmup)
    if host_seconds is not None:
        host_seconds.clear()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    base = dict(engine.stats.snapshot())
    step_times, hit_step_times = rounds.play(args.rounds)
    row = summarize(batch_size, base, engine.stats.snapshot(), step_times, hit_step_times,
                    engine)
    if host_seconds is not None:
        row["host_ms_per_round"] = {name: round(1e3 * value / args.rounds, 3)
                                    for name, value in sorted(host_seconds.items())}
    if trace:
        row["trace"] = device_profile(rounds, trace)
    return row


class Rounds:
    """Plays rounds against the engine: its step, then its build while the simulated
    target verifies for the target step time."""

    def __init__(self, args, engine, batch_size: int):
        self.args, self.engine = args, engine
        self.target = FakeTarget(args.acceptance, engine.passes.runner.arch.vocab_size)
        self.slots = np.arange(batch_size)
        self.num_drafts = np.zeros(batch_size, dtype=np.int64)
        self.drafts = np.zeros(0, dtype=np.int64)
        self.seq = 0

    def request(self) -> P.StepRequest:
        batch_size, args = len(self.slots), self.args
        if self.seq == 0:
            prompt = np.random.default_rng(1).integers(10, self.target.vocab - 1, args.context)
            lens, tokens = np.full(batch_size, args.context), np.tile(prompt, batch_size)
            new = [P.NewRequest(slot=int(s), temperature=args.temperature) for s in self.slots]
        else:
            lens, tokens = self.target.outcomes(self.num_drafts, self.drafts)
            new = []
        return P.StepRequest(
            seq=self.seq, new_requests=new, finished_slots=[], slots=P.pack(self.slots),
            num_new_tokens=P.pack(lens), new_tokens=P.pack(tokens),
            is_step_delta=P.pack(np.full(batch_size, self.seq > 0), np.uint8),
            max_drafts=P.pack(np.full(batch_size, K)),
            target_step_s=args.target_step_ms / 1e3 if self.seq > 1 else 0.0)

    def play(self, count: int) -> tuple[list[float], list[float]]:
        step_times, hit_step_times = [], []
        for _ in range(count):
            request = self.request()
            start = time.perf_counter()
            reply = self.engine.step(request)
            elapsed = time.perf_counter() - start
            step_times.append(elapsed)
            if P.unpack(reply.is_hit, np.uint8).all():
                hit_step_times.append(elapsed)
            self.num_drafts = P.unpack(reply.num_drafts).astype(np.int64)
            self.drafts = P.unpack(reply.draft_tokens).astype(np.int64)
            self.seq += 1
            verified_at = time.perf_counter() + self.args.target_step_ms / 1e3
            self.engine.build(lambda: time.perf_counter() > verified_at)
            while time.perf_counter() < verified_at:  # the target verifies meanwhile
                time.sleep(0)
        return step_times, hit_step_times


def device_profile(rounds: Rounds, trace: str, count: int = 8) -> dict:
    """Kernel time per round and the top kernels over ``count`` rounds; a Chrome trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        rounds.play(count)
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    prof.export_chrome_trace(trace)
    kernels = [(e.key, e.count / count, e.self_device_time_total / count)
               for e in prof.key_averages() if e.self_device_time_total > 0]
    kernels.sort(key=lambda r: -r[2])
    return {"round_ms": round(1e3 * wall / count, 3),
            "kernels_per_round": round(sum(r[1] for r in kernels), 1),
            "device_ms_per_round": round(sum(r[2] for r in kernels) / 1e3, 3),
            "top": [[k[:80], round(c, 1), round(t, 1)] for k, c, t in kernels[:30]]}


def summarize(batch_size, base, stats, step_times, hit_step_times, engine) -> dict:
    def delta(name):
        return stats.get(name, 0.0) - base.get(name, 0.0)
    builds = max(delta("build_rounds"), 1.0)
    lookups = max(delta("lookups"), 1.0)
    plan = engine.policy.plan
    return {
        "batch_size": batch_size,
        "build_ms": round(1e3 * delta("build_seconds") / builds, 3),
        "glue_ms": round(1e3 * delta("glue_seconds") / builds, 3),
        "wait_ms": round(1e3 * delta("build_wait_seconds") / builds, 3),
        "branches_per_build": round(delta("branches") / builds, 2),
        "depth_per_build": round(delta("branch_depth_sum") / builds, 2),
        "hit_rate": round(delta("hits") / lookups, 3),
        "step_ms": round(1e3 * float(np.mean(step_times)), 3),
        "hit_step_ms": round(1e3 * float(np.mean(hit_step_times)), 3) if hit_step_times else None,
        "plan": {"budget": float(plan.budget), "depth": int(plan.depth)},
    }


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draft", default="benchmarks/gpu/configs/qwen2.5-0.5b")
    parser.add_argument("--device", default="cuda")  # a server's draft_device
    parser.add_argument("--dummy", action="store_true")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--target-step-ms", type=float, default=7.0)
    parser.add_argument("--acceptance", default="0.92,0.85,0.78,0.72")
    parser.add_argument("--sim-hit-rate", type=float, default=0.85)
    parser.add_argument("--fanout-budget", type=int, default=8)
    parser.add_argument("--plan", default="auto")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--out")
    parser.add_argument("--trace", help="CUDA: profile rounds, write Chrome traces to "
                        "TRACE-bsN.json")
    parser.add_argument("--trace-batch-sizes", default="1")
    parser.add_argument("--host-breakdown", action="store_true",
                        help="host time per round of the server's main calls (wrapped)")
    args = parser.parse_args()
    args.acceptance = [float(x) for x in args.acceptance.split(",")]
    logging.basicConfig(level=logging.WARNING)
    results = {"provenance": provenance({k: v for k, v in vars(args).items() if k != "out"},
                                        args.device),
               "device": device_name(args.device), "rows": []}
    traced = {int(b) for b in args.trace_batch_sizes.split(",")} if args.trace else set()
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        trace = f"{args.trace}-bs{batch_size}.json" if batch_size in traced else None
        row = run_batch(args, batch_size, trace)
        logging.warning("%s", row)
        results["rows"].append(row)
    text = json.dumps(results, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
