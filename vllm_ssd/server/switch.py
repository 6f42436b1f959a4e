"""Speculation on or off, step by step: a pure decision and the little state it carries.

With an automatic plan (mode ``ssd``, ``build_plan`` and ``backup`` ``auto``) the server
speculates only where it pays (measured, or predicted before both ways were measured),
and for EXPLORE_STEPS of every EXPLORE_EVERY steps (CLEAR_EXPLORE_EVERY once the measured
margin is clear) does the other, so that both stay measured as the batch changes.
Switched off, the rest of that stretch (the window, or up to the next window; at most
MAX_QUIET_STEPS) is *quiet*: promised no drafts, so the proposer does not wait for replies
and rounds without drafts are measured at what they really cost.
"""
from __future__ import annotations

from dataclasses import dataclass

EXPLORE_EVERY = 64  # steps between exploration windows of the other choice (on / off)
EXPLORE_STEPS = 8  # steps in one window: enough for the cache to fill and be measured
CLEAR_MARGIN = 1.5  # one choice measured this many times faster than the other ...
CLEAR_EXPLORE_EVERY = 4 * EXPLORE_EVERY  # ... is re-checked this much less often
MAX_QUIET_STEPS = 16  # longest run of steps sent without a reply while speculation is off


@dataclass(frozen=True)
class SwitchState:
    quiet_until: int = 0  # steps before this one were promised no drafts
    measured_batch_size: int = 0  # batch size at the end of the last exploration window


@dataclass(frozen=True)
class SwitchDecision:
    speculate: bool
    state: SwitchState
    window_ended: bool  # an exploration window just ended: worth a log line


def exploration_period(margin: float | None, batch_size: int, measured_batch_size: int) -> int:
    """CLEAR_EXPLORE_EVERY while the measured margin is clear and the batch is within 2x of
    the one it was measured at (tokens/s per row depend on the batch); else EXPLORE_EVERY."""
    same_batch = measured_batch_size > 0 and \
        max(batch_size, measured_batch_size) <= 2 * min(batch_size, measured_batch_size)
    clear = margin is not None and margin >= CLEAR_MARGIN and same_batch
    return CLEAR_EXPLORE_EVERY if clear else EXPLORE_EVERY


def decide(step: int, batch_size: int, pays: bool, margin: float | None,
           state: SwitchState) -> SwitchDecision:
    """Whether step number ``step`` speculates, given whether speculation ``pays`` (the
    policy's verdict) and the measured ``margin`` of the faster choice."""
    if step < state.quiet_until:
        return SwitchDecision(False, state, False)
    period = exploration_period(margin, batch_size, state.measured_batch_size)
    phase = step % period
    window_ended = phase == EXPLORE_STEPS
    if window_ended:
        state = SwitchState(state.quiet_until, batch_size)
    exploring = phase < EXPLORE_STEPS and step >= period
    speculate = pays != exploring
    if not speculate:
        last_off = (EXPLORE_STEPS if exploring else period) - 1  # phase
        state = SwitchState(step + 1 + min(MAX_QUIET_STEPS, last_off - phase),
                            state.measured_batch_size)
    return SwitchDecision(speculate, state, window_ended)
