"""The wire format between the proposer (inside vLLM) and the draft server.

One owner for every message: msgspec Structs tagged by type, encoded with
msgpack. Per-row data travels as packed little-endian int32 arrays (``bytes``)
so a batch is one message, not a list of Python objects.

A step carries, for each batch row, the request's slot and the tokens committed
since the last step. For a normal decode row those are the sampled tokens of
this step, i.e. the verification outcome: k = len(row) - 1 accepted drafts and
the token t* = row[-1]; the server keys its speculation cache by (slot, k, t*).
"""
from __future__ import annotations

import msgspec
import numpy as np

PROTOCOL_VERSION = 3


class Hello(msgspec.Struct, tag="hello"):
    version: int
    token: str
    num_speculative_tokens: int
    target_vocab_size: int
    max_model_len: int
    max_num_seqs: int
    stats_base: dict[str, float] = {}  # counters carried over from a crashed server
    core_gain: float = 1.0  # the target's cores would grow this many times with the
    # draft's (a CPU draft on cores of its own); weighs the stand-aside verdict
    shares_target_gpu: bool = False  # the draft runs on a GPU of the target's: cache builds
    # slow the target's steps, so just-in-time drafts are the route to beat


class HelloReply(msgspec.Struct, tag="hello_reply"):
    version: int
    ok: bool
    error: str = ""
    vocab_size: int = 0
    model_type: str = ""
    device: str = ""
    pid: int = 0


class NewRequest(msgspec.Struct):
    slot: int
    temperature: float


class StepRequest(msgspec.Struct, tag="step"):
    seq: int
    new_requests: list[NewRequest]
    finished_slots: list[int]
    slots: bytes  # int32 [B]
    num_new_tokens: bytes  # int32 [B], tokens committed since the last step per row
    new_tokens: bytes  # int32 [sum(num_new_tokens)]
    is_step_delta: bytes  # uint8 [B], 1 = the row's tokens are this step's sampled tokens
    max_drafts: bytes  # int32 [B], per-row cap (max_model_len / max_tokens room)
    target_step_s: float = 0.0  # wall time of the target step that produced these outcomes
    previous_round_trip_s: float = 0.0  # the proposer's wait for the previous reply
    wants_reply: bool = True  # False within a quiet run (see StepReply.quiet_steps)
    deadline_misses: int = 0  # the proposer's count of steps whose reply came too late
    wants_stats: bool = False  # the reply carries the server's counters (asked every
    # STATS_EVERY steps and when the proposer's log line is due; /metrics asks apart)


class StepReply(msgspec.Struct, tag="step_reply"):
    seq: int
    num_drafts: bytes  # int32 [B]
    draft_tokens: bytes  # int32 [sum(num_drafts)]
    is_hit: bytes  # uint8 [B]
    stats: dict[str, float] = {}
    # the next quiet_steps steps get no drafts: the proposer sends their outcomes with
    # wants_reply=False and does not wait (speculation switched off costs no round trip)
    quiet_steps: int = 0
    # non-empty: speculation stands aside for good (the measured reason); the proposer
    # sends no more steps and gives the target the draft's cores
    stand_aside: str = ""


class StatsRequest(msgspec.Struct, tag="stats"):
    key: str = ""  # the read-only stats key (not needed on the proposer's own socket)


class StatsReply(msgspec.Struct, tag="stats_reply"):
    stats: dict[str, float]


class Shutdown(msgspec.Struct, tag="shutdown"):
    pass


class ErrorReply(msgspec.Struct, tag="error"):
    seq: int
    error: str


Message = Hello | HelloReply | StepRequest | StepReply | StatsRequest | StatsReply | Shutdown | ErrorReply
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> Message:
    return _decoder.decode(payload)


def pack(array: np.ndarray, dtype=np.int32) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def unpack(payload: bytes, dtype=np.int32) -> np.ndarray:
    return np.frombuffer(payload, dtype=dtype)


def make_dummy_step(seq: int = 0) -> StepRequest:
    """A step with one new request (slot 0) whose prompt is three tokens."""
    return StepRequest(
        seq=seq, new_requests=[NewRequest(slot=0, temperature=0.0)], finished_slots=[],
        slots=pack(np.array([0])), num_new_tokens=pack(np.array([3])),
        new_tokens=pack(np.array([5, 6, 7])), is_step_delta=pack(np.array([0]), np.uint8),
        max_drafts=pack(np.array([4])))
