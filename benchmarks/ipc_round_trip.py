"""A cache hit's round trip as the client sees it, next to the server's own step time: the
rest is IPC and process wake-ups (CPU, tiny random draft; ``busy_poll_ms`` on / off).

    python benchmarks/ipc_round_trip.py --busy-poll-ms 0
    python benchmarks/ipc_round_trip.py --busy-poll-ms 20
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.provenance import provenance  # noqa: E402
from tests import tiny_models  # noqa: E402
from tests.conftest import TINY_ROOT  # noqa: E402
from vllm_ssd import protocol as P  # noqa: E402
from vllm_ssd.client import ServerConnection  # noqa: E402
from vllm_ssd.settings import SSDSettings  # noqa: E402

K = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy-poll-ms", type=float, default=0.0)
    parser.add_argument("--gap-ms", type=float, default=30.0, help="simulated target step")
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args()
    recipe = hashlib.sha256(Path(tiny_models.__file__).read_bytes()).hexdigest()[:10]
    tiny = tiny_models.build_all(TINY_ROOT / recipe)
    settings = SSDSettings(draft_model=str(tiny["target"]), draft_device="cpu", mode="ssd",
                           build_plan="full", log_interval_s=0, sim_hit_rate=1.0,
                           runtime_dir=tempfile.mkdtemp(), busy_poll_ms=args.busy_poll_ms)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                    target_vocab_size=512, max_model_len=1024, max_num_seqs=4)
    client = ServerConnection(settings, hello)
    client.start(wait=True)
    try:
        round_trips = play(client, args)
        stats = client.stats()
    finally:
        client.close()
    result = {"provenance": provenance(vars(args)), "hits": len(round_trips),
              "hit_round_trip_ms": round(1e3 * float(np.mean(round_trips)), 3),
              "server_step_ms": round(1e3 * stats["step_seconds"] / stats["steps"], 3)}
    print(json.dumps(result))


def play(client, args) -> list[float]:
    """Steps that accept every draft (so every lookup after the first rounds hits)."""
    delta, round_trips = list(range(1, 60)), []
    for i in range(args.steps):
        request = P.StepRequest(
            seq=i, new_requests=[P.NewRequest(slot=0, temperature=0.0)] if i == 0 else [],
            finished_slots=[], slots=P.pack([0]), num_new_tokens=P.pack([len(delta)]),
            new_tokens=P.pack(delta), is_step_delta=P.pack([i > 0], np.uint8),
            max_drafts=P.pack([K]), target_step_s=args.gap_ms / 1e3 if i > 1 else 0.0)
        start = time.perf_counter()
        reply = client.step(request)
        elapsed = time.perf_counter() - start
        drafts = P.unpack(reply.draft_tokens).tolist()
        if i >= args.steps // 4 and P.unpack(reply.is_hit, np.uint8)[0]:
            round_trips.append(elapsed)
        delta = drafts + [7]
        time.sleep(args.gap_ms / 1e3)
    return round_trips


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
