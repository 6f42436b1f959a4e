"""The on/off switch as a pure decision: quiet promises, exploration windows, clear margins."""
from vllm_ssd.server.switch import (CLEAR_EXPLORE_EVERY, EXPLORE_EVERY, EXPLORE_STEPS,
                                    MAX_QUIET_STEPS, SwitchState, decide, exploration_period)


def run(pays: bool, steps: int, margin=None, batch_size: int = 4):
    state, decisions = SwitchState(), []
    for step in range(steps):
        decision = decide(step, batch_size, pays, margin, state)
        state = decision.state
        decisions.append(decision)
    return decisions


def test_off_promises_quiet_steps_and_still_explores_the_other_way():
    decisions = run(pays=False, steps=2 * EXPLORE_EVERY)
    first_on = [i for i, d in enumerate(decisions) if d.speculate]
    assert first_on == list(range(EXPLORE_EVERY, EXPLORE_EVERY + EXPLORE_STEPS))
    assert decisions[0].state.quiet_until == 1 + MAX_QUIET_STEPS
    # a quiet promise never runs into the exploration window
    assert all(d.state.quiet_until <= EXPLORE_EVERY for d in decisions[:EXPLORE_EVERY])


def test_on_goes_off_only_inside_exploration_windows():
    decisions = run(pays=True, steps=EXPLORE_EVERY + EXPLORE_STEPS + 2)
    off = [i for i, d in enumerate(decisions) if not d.speculate]
    assert off == list(range(EXPLORE_EVERY, EXPLORE_EVERY + EXPLORE_STEPS))
    assert decisions[EXPLORE_EVERY].state.quiet_until == EXPLORE_EVERY + EXPLORE_STEPS
    assert [i for i, d in enumerate(decisions) if d.window_ended] == \
        [EXPLORE_STEPS, EXPLORE_EVERY + EXPLORE_STEPS]


def test_a_clear_margin_at_the_same_batch_explores_less_often():
    assert exploration_period(2.0, 4, 4) == CLEAR_EXPLORE_EVERY
    assert exploration_period(2.0, 9, 4) == EXPLORE_EVERY  # batch more than 2x away
    assert exploration_period(1.2, 4, 4) == EXPLORE_EVERY  # no clear margin
    assert exploration_period(None, 4, 0) == EXPLORE_EVERY
    decisions = run(pays=True, steps=CLEAR_EXPLORE_EVERY + 1, margin=2.0)
    off = [i for i, d in enumerate(decisions) if not d.speculate]
    assert off == [CLEAR_EXPLORE_EVERY]  # measured at step EXPLORE_STEPS, then left alone
