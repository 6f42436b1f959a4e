"""benchmarks/gpu/profile_build.py: its simulated target and a short run on the CPU."""
import argparse
import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "profile_build.py"


def load():
    spec = importlib.util.spec_from_file_location("profile_build", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fake_target_accepts_a_prefix_of_the_drafts_then_a_bonus():
    module = load()
    target = module.FakeTarget([1.0, 1.0, 0.0, 0.0], vocab=100)
    num_drafts = np.array([4, 1, 0])
    drafts = np.array([11, 12, 13, 14, 21])
    lens, tokens = target.outcomes(num_drafts, drafts)
    assert lens.tolist() == [3, 2, 1]  # two accepted (rates), one (only one draft), none
    assert tokens[:2].tolist() == [11, 12] and tokens[3] == 21
    assert ((tokens[[2, 4, 5]] >= 10) & (tokens[[2, 4, 5]] < 99)).all()  # bonus tokens


def test_rounds_on_the_cpu_report_builds_and_hits(tiny):
    module = load()
    args = argparse.Namespace(
        draft=str(tiny["draft"]), device="cpu", dummy=False, eager=True, target_step_ms=5.0,
        acceptance=[0.9, 0.8, 0.7, 0.6], sim_hit_rate=1.0, fanout_budget=4, plan="full",
        temperature=0.0, context=32, rounds=12, warmup=4, host_breakdown=True)
    row = module.run_batch(args, batch_size=2)
    assert row["build_ms"] > 0 and row["depth_per_build"] > 0 and row["hit_rate"] > 0.5
    assert row["host_ms_per_round"]["engine.step"] > 0
