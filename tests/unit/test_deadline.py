"""The step deadline (a pure function of recent reply times and the target step) and the
restart back-off."""
import numpy as np
import pytest

from vllm_ssd.client.deadline import (DEADLINE_CEILING_S, DEADLINE_FLOOR_S, MIN_REPLIES, REPLY_MARGIN,
                               WINDOW, StepDeadline, step_deadline_s)
from vllm_ssd.client.restarts import RestartSchedule


def test_the_ceiling_applies_until_enough_replies_were_seen():
    few = np.full(MIN_REPLIES - 1, 0.001)
    assert step_deadline_s(few, 0.01) == DEADLINE_CEILING_S
    assert step_deadline_s(np.zeros(0), 0.0) == DEADLINE_CEILING_S


def test_a_margin_over_the_recent_replies_within_floor_and_ceiling():
    replies = np.full(32, 0.05)
    assert step_deadline_s(replies, 0.0) == pytest.approx(REPLY_MARGIN * 0.05)
    assert step_deadline_s(np.full(32, 0.001), 0.0) == DEADLINE_FLOOR_S  # fast server: floor
    assert step_deadline_s(np.full(32, 2.0), 0.0) == DEADLINE_CEILING_S  # slow server: ceiling


def test_the_90th_percentile_counts_not_the_mean():
    replies = np.concatenate([np.full(27, 0.01), np.full(5, 0.06)])  # 15 % slow replies
    assert step_deadline_s(replies, 0.0) == pytest.approx(REPLY_MARGIN * 0.06)


def test_at_least_one_target_step():
    assert step_deadline_s(np.full(32, 0.01), 0.5) == pytest.approx(0.5)
    assert step_deadline_s(np.full(32, 0.01), 5.0) == DEADLINE_CEILING_S


def test_step_deadline_keeps_a_window_and_the_override_wins():
    deadline = StepDeadline()
    for _ in range(WINDOW):
        deadline.observe_reply(0.9)
    for _ in range(WINDOW):
        deadline.observe_reply(0.05)  # the slow replies have left the window
    assert deadline.seconds() == pytest.approx(REPLY_MARGIN * 0.05)
    deadline.observe_target_step(0.3)
    assert deadline.seconds() == pytest.approx(0.3)
    fixed = StepDeadline(override_ms=40)
    fixed.observe_reply(5.0)
    assert fixed.seconds() == pytest.approx(0.04)


def test_restart_back_off_grows_while_start_ups_fail_and_resets():
    schedule = RestartSchedule((0.0, 1.0, 5.0))
    assert schedule.due(100.0)
    assert schedule.failed(100.0) == 0.0 and schedule.due(100.0)  # first restart: at once
    assert schedule.failed(100.0) == 1.0 and not schedule.due(100.5) and schedule.due(101.0)
    assert schedule.failed(101.0) == 5.0
    assert schedule.failed(106.0) == 5.0  # stays at the last step
    schedule.succeeded()
    assert schedule.failed(200.0) == 0.0
