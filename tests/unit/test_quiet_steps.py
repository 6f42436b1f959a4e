"""Speculation switched off: the engine promises quiet steps (no drafts, no reply awaited)
up to the next exploration window, and keeps that promise."""
import numpy as np

from vllm_ssd import protocol as P
from vllm_ssd.server.factory import build_engine
from vllm_ssd.server.speculation.switch import (CLEAR_EXPLORE_EVERY, EXPLORE_EVERY, EXPLORE_STEPS, FIRST_WINDOW,
                                    MAX_QUIET_STEPS, exploration_period)
from vllm_ssd.settings import SSDSettings


def make_engine(tiny, pays: bool):
    settings = SSDSettings(draft_model=str(tiny["draft"]), draft_device="cpu", mode="ssd",
                           enforce_eager=True)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=3,
                    target_vocab_size=512, max_model_len=256, max_num_seqs=2)
    engine = build_engine(settings, hello)
    engine.policy.speculation_pays = lambda *args: pays  # the measured verdict, fixed
    return engine


def run_steps(engine, num_steps: int) -> list[tuple[int, int]]:
    """(drafts, quiet_steps) of each reply for one greedy request."""
    replies = []
    for index in range(num_steps):
        delta = [1, 40, 41, 42] if index == 0 else [7]
        reply = engine.step(P.StepRequest(
            seq=index, new_requests=[P.NewRequest(slot=0, temperature=0.0)] if index == 0 else [],
            finished_slots=[], slots=P.pack([0]), num_new_tokens=P.pack([len(delta)]),
            new_tokens=P.pack(delta), is_step_delta=P.pack([index > 0], np.uint8),
            max_drafts=P.pack([3]), wants_reply=True))
        engine.build(lambda: False)
        replies.append((len(P.unpack(reply.draft_tokens)), reply.quiet_steps))
    return replies


def test_speculation_off_promises_quiet_steps_until_the_next_window(tiny):
    """Off from the start: every promise is kept (no drafts), is as long as allowed (up to
    MAX_QUIET_STEPS, or up to the step before the next exploration window), never covers
    a window, and the window speculates."""
    replies = run_steps(make_engine(tiny, pays=False), 2 * EXPLORE_EVERY)
    windows = [range(FIRST_WINDOW, FIRST_WINDOW + EXPLORE_STEPS)] + [  # unmeasured: early
        range(start, start + EXPLORE_STEPS)
        for start in range(EXPLORE_EVERY, len(replies), EXPLORE_EVERY)]
    in_window = {index for window in windows for index in window}
    promised: set[int] = set()
    for index, (num_drafts, quiet) in enumerate(replies):
        if index in promised:
            assert num_drafts == 0, f"step {index} was promised no drafts"
            continue
        if index in in_window:
            continue
        assert num_drafts == 0, f"step {index}: speculation is off outside the windows"
        next_window = min((w.start for w in windows if w.start > index), default=len(replies))
        assert 0 < quiet <= MAX_QUIET_STEPS
        assert quiet == MAX_QUIET_STEPS or index + quiet == next_window - 1
        promised.update(range(index + 1, index + 1 + quiet))
    assert not promised & in_window
    for window in windows:
        assert sum(replies[i][0] for i in window) > 0, "an exploration window speculates"
    # the proposer awaits a reply on at most one step in MAX_QUIET_STEPS + 1 while off
    awaited = [i for i in range(EXPLORE_EVERY) if i not in promised | in_window]
    assert len(awaited) <= -(-EXPLORE_EVERY // (MAX_QUIET_STEPS + 1)) + 1


def test_speculation_on_explores_off_quietly(tiny):
    """The off-window of speculation that pays is quiet too: its first reply promises the
    rest of the window, and drafts come back right after it."""
    replies = run_steps(make_engine(tiny, pays=True), EXPLORE_EVERY + EXPLORE_STEPS + 2)
    early = range(FIRST_WINDOW, FIRST_WINDOW + EXPLORE_STEPS)  # while unmeasured
    window = [*early, *range(EXPLORE_EVERY, EXPLORE_EVERY + EXPLORE_STEPS)]
    assert replies[EXPLORE_EVERY][1] == EXPLORE_STEPS - 1
    assert replies[FIRST_WINDOW][1] == EXPLORE_STEPS - 1
    assert all(quiet == 0 for index, (_, quiet) in enumerate(replies) if index not in window)
    assert all(replies[i][0] == 0 for i in window)  # exploring the other way: no drafts
    after_early = FIRST_WINDOW + EXPLORE_STEPS  # no cache was built in the window
    assert all(replies[i][0] > 0 for i in range(2, EXPLORE_EVERY)
               if i not in window and i != after_early)
    assert replies[EXPLORE_EVERY + EXPLORE_STEPS + 1][0] > 0


def measured(engine, with_drafts: float, without_drafts: float):
    for _ in range(5):
        engine.policy.speculative_rate.update(with_drafts)
        engine.policy.plain_rate.update(without_drafts)
    return engine


def test_a_clear_margin_is_explored_less_often(tiny):
    """Drafts measured at 2x the tokens/s of rounds without (at this batch size, noted at
    step EXPLORE_STEPS): no off-window at EXPLORE_EVERY, the next one only at
    CLEAR_EXPLORE_EVERY — while the batch size stays within 2x of the measured one."""
    clear = measured(make_engine(tiny, pays=True), with_drafts=2.0, without_drafts=1.0)
    replies = run_steps(clear, CLEAR_EXPLORE_EVERY + 2)
    assert all(replies[i][0] > 0 for i in range(2, CLEAR_EXPLORE_EVERY))
    assert replies[CLEAR_EXPLORE_EVERY][0] == 0
    assert replies[CLEAR_EXPLORE_EVERY][1] == EXPLORE_STEPS - 1
    assert clear.plans.switch.measured_batch_size == 1
    margin = clear.policy.measured_margin()
    assert exploration_period(margin, 2, 1) == CLEAR_EXPLORE_EVERY
    assert exploration_period(margin, 4, 1) == EXPLORE_EVERY  # another batch: measure again
    close = measured(make_engine(tiny, pays=True), with_drafts=1.2, without_drafts=1.0)
    run_steps(close, EXPLORE_EVERY + EXPLORE_STEPS + 2)
    assert close.plans.switch.measured_batch_size == 1
    assert exploration_period(close.policy.measured_margin(), 1, 1) == EXPLORE_EVERY  # 1.2: no clear margin


def test_a_clear_measured_loss_stands_aside_at_once_and_for_good(tiny):
    """The first step at which both kinds of round are measured takes the verdict (no
    waiting for a window end); a draft on cores of its own that loses stops for good."""
    engine = measured(make_engine(tiny, pays=True), with_drafts=1.0, without_drafts=2.0)
    engine.plans.core_gain = 2.0
    replies = run_steps(engine, 3)
    assert engine.plans.stand_aside_reason and "1.00 tokens/s" in engine.plans.stand_aside_reason
    assert engine.stats.scalars["stood_aside"] == 1.0
    assert all(drafts == 0 for drafts, _ in replies[1:])  # drafting stopped
    shared = measured(make_engine(tiny, pays=True), with_drafts=1.0, without_drafts=2.0)
    run_steps(shared, 3)  # no cores of its own (core_gain 1): the switch decides instead
    assert not shared.plans.stand_aside_reason
