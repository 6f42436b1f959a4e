"""Admission of every frame the draft server receives, before it reaches the engine.

The server serves one peer: the socket identity whose ``Hello`` carried the session
token. Frames from any other identity are dropped, except a ``StatsRequest`` with the
read-only stats key (metrics readers in other processes of the engine). A frame that
does not decode, has the wrong shape or whose fields disagree is dropped too; nothing
of the server's state is touched. Every drop is counted (``rejected_frames``, of which
``foreign_frames`` came from another peer) and each kind of problem is logged once.
"""
from __future__ import annotations

import hmac
import logging
import math
from dataclasses import dataclass
from typing import Callable

import msgspec
import numpy as np

from vllm_ssd import protocol as P

logger = logging.getLogger(__name__)
FRAME_SLACK_BYTES = 1 << 20  # a step's fixed fields, its new requests and finished slots


@dataclass(frozen=True)
class StepLimits:
    max_slots: int
    max_drafts: int
    vocab_size: int
    max_len: int  # most committed tokens of one request

    def max_frame_bytes(self) -> int:
        """The largest step a proposer sends: every slot resynchronised in full."""
        return self.max_slots * (4 * self.max_len + 16) + FRAME_SLACK_BYTES


def secret_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class FrameGuard:
    def __init__(self, stats_key: str):
        """Drops are counted by the callable ``count_drops_with`` sets
        (``ServerStats.observe_dropped_frame``); those before it are kept and handed over."""
        self.stats_key = stats_key
        self.on_drop: Callable[[bool], None] | None = None
        self.early_drops: list[bool] = []  # foreign?, of each drop while on_drop is None
        self.peer: bytes | None = None  # the identity that passed the token check
        self.max_frame_bytes = FRAME_SLACK_BYTES
        self.logged: set[str] = set()

    def count_drops_with(self, on_drop: Callable[[bool], None]) -> None:
        """From now on drops are counted by ``on_drop``; the earlier ones are handed over."""
        for foreign in self.early_drops:
            on_drop(foreign)
        self.early_drops, self.on_drop = [], on_drop

    def bind(self, identity: bytes, limits: StepLimits) -> None:
        self.peer = identity
        self.max_frame_bytes = limits.max_frame_bytes()

    def admit(self, parts: list[bytes]) -> tuple[bytes, P.Message] | None:
        """(identity, message) of an acceptable frame, else None (counted and logged)."""
        if len(parts) != 2:
            return self.reject("frame of %d parts (expected identity + payload)", len(parts),
                               identity=parts[0] if parts else None)
        identity, payload = parts
        if len(payload) > self.max_frame_bytes:
            return self.reject("oversized frame of %d bytes", len(payload), identity=identity)
        try:
            message = P.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            return self.reject("undecodable frame: %s", error, identity=identity)
        if identity != self.peer:
            if isinstance(message, P.StatsRequest) and secret_matches(message.key, self.stats_key):
                return identity, message
            return self.reject("%s from a peer other than the proposer",
                               type(message).__name__, identity=identity)
        if not isinstance(message, (P.StepRequest, P.StatsRequest, P.Shutdown)):
            return self.reject("unexpected %s from the proposer", type(message).__name__)
        return identity, message

    def admit_hello(self, parts: list[bytes]) -> tuple[bytes, P.Hello] | None:
        """Before the handshake: (identity, Hello) of a decodable Hello, else None. A stats
        request with the key (a metrics scrape during a restart) is dropped uncounted."""
        if len(parts) != 2 or len(parts[1]) > FRAME_SLACK_BYTES:
            return self.reject("frame of %d parts or oversized before the handshake", len(parts))
        try:
            message = P.decode(parts[1])
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            return self.reject("undecodable frame: %s", error)
        if isinstance(message, P.Hello):
            return parts[0], message
        if isinstance(message, P.StatsRequest) and secret_matches(message.key, self.stats_key):
            return None
        return self.reject("%s before the handshake", type(message).__name__)

    def reject(self, reason: str, *args, identity: bytes | None = None) -> None:
        foreign = identity is not None and self.peer is not None and identity != self.peer
        if self.on_drop is None:
            self.early_drops.append(foreign)
        else:
            self.on_drop(foreign)
        if reason not in self.logged:
            self.logged.add(reason)
            logger.warning("dropped a frame (counted in rejected_frames; logged once): " + reason,
                           *args)
        return None


def step_problem(request: P.StepRequest, limits: StepLimits, active: np.ndarray,
                 num_tokens: np.ndarray, last_seq: int) -> str | None:
    """Why ``request`` cannot be applied to a table with ``active`` [max_slots] slots of
    ``num_tokens`` [max_slots] committed tokens, or None when it can. Pure."""
    if request.seq <= last_seq:
        return f"seq {request.seq} is not after the last step's {last_seq}"
    for name in ("target_step_s", "previous_round_trip_s"):
        if not math.isfinite(getattr(request, name)) or getattr(request, name) < 0:
            return f"{name} = {getattr(request, name)!r} is not a finite time"
    for name in ("slots", "num_new_tokens", "new_tokens", "max_drafts"):
        if len(getattr(request, name)) % 4:
            return f"{name} holds {len(getattr(request, name))} bytes, not whole int32s"
    slots = P.unpack(request.slots).astype(np.int64)
    lens = P.unpack(request.num_new_tokens).astype(np.int64)
    caps = P.unpack(request.max_drafts)
    flags = P.unpack(request.is_step_delta, np.uint8)
    if not len(lens) == len(flags) == len(caps) == len(slots):
        return (f"per-row fields differ in length (slots {len(slots)}, num_new_tokens "
                f"{len(lens)}, is_step_delta {len(flags)}, max_drafts {len(caps)})")
    return _lifecycle_problem(request, limits) or _rows_problem(
        request, limits, active, num_tokens, slots, lens, caps, flags)


def _lifecycle_problem(request: P.StepRequest, limits: StepLimits) -> str | None:
    new = [r.slot for r in request.new_requests]
    for name, values in (("new_requests", new), ("finished_slots", request.finished_slots)):
        if any(not 0 <= slot < limits.max_slots for slot in values):
            return f"{name}: a slot outside [0, {limits.max_slots})"
        if len(set(values)) != len(values):
            return f"{name}: a slot listed twice"
    if any(not (math.isfinite(r.temperature) and r.temperature >= 0) for r in request.new_requests):
        return "new_requests: a temperature that is not a finite number >= 0"
    return None


def _rows_problem(request, limits, active, num_tokens, slots, lens, caps, flags) -> str | None:
    if ((slots < 0) | (slots >= limits.max_slots)).any():
        return f"slots: a slot outside [0, {limits.max_slots})"
    if len(np.unique(slots)) != len(slots):
        return "slots: a slot in two rows"
    tokens = P.unpack(request.new_tokens)
    if (lens < 0).any() or int(lens.sum()) != len(tokens):
        return f"num_new_tokens (sum {int(lens.sum())}) does not match new_tokens ({len(tokens)})"
    if ((tokens < 0) | (tokens >= limits.vocab_size)).any():
        return f"new_tokens: a token outside the vocabulary [0, {limits.vocab_size})"
    if (caps < 0).any() or (flags > 1).any() or ((flags == 1) & (lens == 0)).any():
        return "max_drafts < 0, an is_step_delta flag not 0/1, or a step row without tokens"
    after_active, after_len = active.copy(), num_tokens.copy()
    after_active[request.finished_slots] = False
    new = [r.slot for r in request.new_requests]
    after_active[new], after_len[new] = True, 0
    if not after_active[slots].all():
        return "slots: a row whose slot holds no request"
    grown = after_len[slots] + lens
    if (grown > limits.max_len).any() or (grown < 1).any():
        return f"a row would hold no tokens or more than {limits.max_len}"
    return None
