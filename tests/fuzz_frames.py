"""Frames a hostile or broken peer might send a draft server: random bytes, truncated and
oversized frames, wrong message types and field shapes, a wrong token, replayed and
out-of-order steps, stray multipart frames. Every one must be dropped."""
from __future__ import annotations

import msgspec
import numpy as np

from vllm_ssd import protocol as P


def bad_steps(rng: np.random.Generator, max_slots: int, vocab: int) -> list[P.StepRequest]:
    """Well-formed steps whose fields disagree or point outside the server's limits, and
    steps with sequence numbers from the past."""
    def make(seq=10**9, slots=(0,), lens=(2,), tokens=(7, 8), flags=(1,), caps=(3,), new=(),
             finished=()):
        return P.StepRequest(
            seq=seq, new_requests=[P.NewRequest(slot=s, temperature=0.0) for s in new],
            finished_slots=list(finished), slots=P.pack(slots), num_new_tokens=P.pack(lens),
            new_tokens=P.pack(tokens), is_step_delta=P.pack(flags, np.uint8),
            max_drafts=P.pack(caps), wants_reply=False)
    slot = int(rng.integers(0, max_slots))
    return [
        make(seq=0), make(seq=-5), make(seq=1),  # replayed / out of order
        make(slots=(max_slots + slot,)), make(slots=(slot, slot), lens=(1, 1), tokens=(1, 2)),
        make(lens=(5,)), make(tokens=(7, vocab + slot)), make(caps=(3, 3)),
        make(new=[max_slots]), make(finished=[slot, slot]), make(flags=(7,)),
        make(new=[slot], slots=(slot,), lens=(10**6,), tokens=tuple(range(3)), flags=(0,)),
    ]


def fuzz_frames(rng: np.random.Generator, count: int, max_slots: int, vocab: int,
                oversized_bytes: int, valid_step: P.StepRequest | None = None) -> list[list[bytes]]:
    """``count`` frames (each a list of parts) cycling through every kind of bad input."""
    template = P.encode(valid_step or P.make_dummy_step(seq=10**9))
    kinds = [
        lambda: [rng.bytes(int(rng.integers(0, 2000)))],
        lambda: [template[:int(rng.integers(0, len(template)))]],  # truncated
        lambda: [msgspec.msgpack.encode({"type": "step", "seq": "x", "slots": [1, 2]})],
        lambda: [msgspec.msgpack.encode({"type": str(rng.integers(1 << 30))})],
        lambda: [msgspec.msgpack.encode([1, 2, 3])],
        lambda: [msgspec.msgpack.encode({"type": "step_reply", "seq": 1, "num_drafts": b"",
                                         "draft_tokens": b"", "is_hit": b""})],
        lambda: [P.encode(P.Hello(version=P.PROTOCOL_VERSION, token="wrong", num_speculative_tokens=3,
                                  target_vocab_size=vocab, max_model_len=64, max_num_seqs=1))],
        lambda: [P.encode(P.StatsRequest(key="guessed"))],
        lambda: [template, b"a stray second part"],
        lambda: [P.encode(steps[int(rng.integers(len(steps)))])],
    ]
    steps = bad_steps(rng, max_slots, vocab)
    frames = [kinds[i % len(kinds)]() for i in range(count)]
    for i in range(0, count, max(count // 4, 1)):  # a few oversized frames
        frames[i] = [b"\x00" * oversized_bytes]
    return frames
