"""Speculation on or off, step by step: a pure decision and the little state it carries.

With an automatic plan (mode ``ssd``, ``build_plan`` and ``backup`` ``auto``) the server
speculates only where it pays (measured, or predicted before both ways were measured),
and for EXPLORE_STEPS of every EXPLORE_EVERY steps (CLEAR_EXPLORE_EVERY once the measured
margin is clear) does the other, so that both stay measured as the batch changes.
Switched off, the rest of that stretch (the window, or up to the next window; at most
MAX_QUIET_STEPS) is *quiet*: promised no drafts, so the proposer does not wait for replies
and rounds without drafts are measured at what they really cost.

Where speculation loses by measurement even counting the cores the target would get back
from the draft (``stand_aside_verdict``), the server stands aside for good: the proposer
stops drafting and gives the target the draft's CPU cores.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

EXPLORE_EVERY = 64  # steps between exploration windows of the other choice (on / off)
EXPLORE_STEPS = 8  # steps in one window: enough for the cache to fill and be measured
CLEAR_MARGIN = 1.5  # one choice measured this many times faster than the other ...
CLEAR_EXPLORE_EVERY = 4 * EXPLORE_EVERY  # ... is re-checked this much less often
MAX_QUIET_STEPS = 16  # longest run of steps sent without a reply while speculation is off
FIRST_WINDOW = 8  # an early window while the margin is unmeasured: a verdict within
# FIRST_WINDOW + EXPLORE_STEPS steps, not EXPLORE_EVERY
STAND_ASIDE_GAIN = 0.9  # share of the draft's cores' speed the target would get from them
STAND_ASIDE_WINDOWS = 2  # window ends in a row that measured a loss (one if clear)


@dataclass(frozen=True)
class SwitchState:
    quiet_until: int = 0  # steps before this one were promised no drafts
    measured_batch_size: int = 0  # batch size at the end of the last exploration window
    losing_windows: int = 0  # window ends in a row at which speculation measured a loss
    judged: bool = False  # a stand-aside verdict was taken (the first: once both measured)


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
    early = margin is None and FIRST_WINDOW <= step < FIRST_WINDOW + EXPLORE_STEPS
    if early:
        phase = step - FIRST_WINDOW
    window_ended = phase == EXPLORE_STEPS or step == FIRST_WINDOW + EXPLORE_STEPS
    if window_ended:
        state = replace(state, measured_batch_size=batch_size)
    exploring = phase < EXPLORE_STEPS and (step >= period or early)
    speculate = pays != exploring
    if not speculate:
        last_off = (EXPLORE_STEPS if exploring else period) - 1  # phase
        room = last_off - phase  # steps left before the next window
        if margin is None and step < FIRST_WINDOW:
            room = FIRST_WINDOW - step - 1
        state = replace(state, quiet_until=step + 1 + min(MAX_QUIET_STEPS, room))
    return SwitchDecision(speculate, state, window_ended)


def stand_aside_verdict(speculative_rate: float | None, plain_rate: float | None,
                        core_gain: float, losing_windows: int) -> tuple[bool, int]:
    """At a window end: whether to stop speculating for good, and the new count of losing
    window ends. Only a draft on cores of its own stands aside (``core_gain`` > 1: the
    target would run on that many times its cores); elsewhere the switch's windows keep
    measuring. Speculation loses where rounds with drafts make fewer tokens per second
    than rounds without would with the draft's cores added. One clear loss (by
    CLEAR_MARGIN) or STAND_ASIDE_WINDOWS in a row decide."""
    if speculative_rate is None or plain_rate is None or core_gain <= 1.0:
        return False, losing_windows
    plain_with_cores = plain_rate * max(1.0, STAND_ASIDE_GAIN * core_gain)
    if speculative_rate >= plain_with_cores:
        return False, 0
    losing = losing_windows + 1
    clear = plain_with_cores >= CLEAR_MARGIN * speculative_rate
    return clear or losing >= STAND_ASIDE_WINDOWS, losing
