"""The on/off switch as a pure decision: quiet promises, exploration windows, clear margins."""
from vllm_ssd.server.speculation.switch import (CLEAR_EXPLORE_EVERY, EXPLORE_EVERY, EXPLORE_STEPS,
                                    FIRST_WINDOW, MAX_QUIET_STEPS, SwitchState, decide,
                                    exploration_period, stand_aside_verdict)

EARLY = list(range(FIRST_WINDOW, FIRST_WINDOW + EXPLORE_STEPS))  # while unmeasured


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
    assert first_on == EARLY + list(range(EXPLORE_EVERY, EXPLORE_EVERY + EXPLORE_STEPS))
    assert decisions[0].state.quiet_until == FIRST_WINDOW  # quiet up to the early window
    # a quiet promise never runs into the exploration window
    assert all(d.state.quiet_until <= EXPLORE_EVERY for d in decisions[:EXPLORE_EVERY])


def test_on_goes_off_only_inside_exploration_windows():
    decisions = run(pays=True, steps=EXPLORE_EVERY + EXPLORE_STEPS + 2)
    off = [i for i, d in enumerate(decisions) if not d.speculate]
    assert off == EARLY + list(range(EXPLORE_EVERY, EXPLORE_EVERY + EXPLORE_STEPS))
    assert decisions[EXPLORE_EVERY].state.quiet_until == EXPLORE_EVERY + EXPLORE_STEPS
    assert [i for i, d in enumerate(decisions) if d.window_ended] == \
        [FIRST_WINDOW + EXPLORE_STEPS, EXPLORE_EVERY + EXPLORE_STEPS]  # the early one first


def test_a_clear_margin_at_the_same_batch_explores_less_often():
    assert exploration_period(2.0, 4, 4) == CLEAR_EXPLORE_EVERY
    assert exploration_period(2.0, 9, 4) == EXPLORE_EVERY  # batch more than 2x away
    assert exploration_period(1.2, 4, 4) == EXPLORE_EVERY  # no clear margin
    assert exploration_period(None, 4, 0) == EXPLORE_EVERY
    decisions = run(pays=True, steps=CLEAR_EXPLORE_EVERY + 1, margin=2.0)
    off = [i for i, d in enumerate(decisions) if not d.speculate]
    assert off == [CLEAR_EXPLORE_EVERY]  # measured at step EXPLORE_STEPS, then left alone


def test_a_measured_margin_skips_the_early_window():
    decisions = run(pays=True, steps=EXPLORE_EVERY, margin=1.2)
    assert all(d.speculate for d in decisions)


def test_standing_aside_counts_the_cores_the_target_would_get_back():
    # 1.6 tokens/s with drafts against 2.0 without, on the target's one core of two
    assert stand_aside_verdict(1.6, 2.0, core_gain=2.0, losing_windows=0) == (True, 1)
    assert stand_aside_verdict(2.6, 2.0, core_gain=1.5, losing_windows=0) == (False, 1)
    assert stand_aside_verdict(2.6, 2.0, core_gain=1.5, losing_windows=1) == (True, 2)
    # no cores of its own (a GPU draft, or a CPU draft on the target's cores): the switch
    # goes on measuring instead
    assert stand_aside_verdict(1.0, 2.0, core_gain=1.0, losing_windows=5) == (False, 5)
    # the AMX case: drafts well ahead even of the target on both cores
    assert stand_aside_verdict(6.0, 2.2, core_gain=2.0, losing_windows=1) == (False, 0)
    assert stand_aside_verdict(None, 2.0, core_gain=2.0, losing_windows=1) == (False, 1)
