"""Fallback decisions and online estimates of the draft server's policy."""
import numpy as np
import pytest

from vllm_ssd.saguaro.estimators import AcceptanceEstimate, LinearCost, PowerLawMissEstimate
from vllm_ssd.saguaro.estimators import Ewma
from vllm_ssd.server.speculation.policy import MIN_STEP_SAMPLES, SpeculationPolicy
from vllm_ssd.server.state import SOURCE_CACHE, SOURCE_NGRAM, SOURCE_NONE


def test_acceptance_estimate_is_the_geometric_mle():
    est = AcceptanceEstimate(prior=0.5, prior_weight=1e-9, decay=1.0)
    # rounds of 4 drafts: 4 accepted, 2 accepted (then rejected), 0 accepted (rejected)
    est.observe(np.array([4, 2, 0]), np.array([4, 4, 4]))
    assert est.value == pytest.approx(6 / 8)


def test_power_law_recovers_r():
    est = PowerLawMissEstimate(prior_r=1.0, max_fanout=8, decay=1.0)
    for fanout in (1, 2, 4, 8):
        miss = 0.5 * fanout ** -2.0
        hits = np.arange(1000) >= 1000 * miss
        est.observe(np.full(1000, fanout), hits)
    r, c = est.law()
    assert r == pytest.approx(2.0, rel=0.05) and c == pytest.approx(0.5, rel=0.1)


def test_linear_cost_converges():
    cost = LinearCost(0.01, 0.001)
    for _ in range(300):
        for rows in (1, 8, 32):
            cost.observe(rows, 0.002 + 0.0005 * rows)
    assert cost.predict(16) == pytest.approx(0.002 + 0.0005 * 16, rel=0.1)


def make_policy(backup="auto"):
    policy = SpeculationPolicy(max_drafts=4, max_budget=8, fanout_r=None,
                               backup=backup)
    for _ in range(MIN_STEP_SAMPLES):  # enough steps of both kinds to predict from
        policy.observe_target_step(0.01, verified_drafts=True)
        policy.observe_target_step(0.01, verified_drafts=False)
    policy.p_hit.value = 0.9
    return policy


def test_backup_choice_follows_batch_size():
    policy = make_policy()
    jit = 0.006  # 0.6 target steps
    assert policy.choose_backup(1, jit) == "neural"
    assert policy.choose_backup(128, jit) == "ngram"
    assert make_policy("neural").choose_backup(128, jit) == "neural"


def test_fanout_rows_follow_source_and_draft_count():
    policy = make_policy()
    fanout = policy.fanout(np.array([SOURCE_NONE, SOURCE_CACHE, SOURCE_NGRAM]), np.array([0, 4, 4]))
    assert fanout.shape == (3, 5) and (fanout.sum(axis=1) == 8).all()
    assert fanout[0, 0] == 8  # no drafts: every guess is about the next token
    assert fanout[2, 0] > fanout[1, 0]  # poor n-gram drafts: most rounds reject at once


def test_a_single_row_count_uses_the_relative_slope():
    gpu = LinearCost(0.01, 0.001, relative_slope=0.01)
    for _ in range(50):
        gpu.observe(1, 0.002)  # only one-row forwards seen so far
    assert gpu.predict(1) == pytest.approx(0.002)
    assert gpu.predict(8) == pytest.approx(0.002 * (1 + 0.01 * 7))


def test_a_narrow_spread_of_rows_is_not_read_as_a_steep_slope():
    """Seen on the H200: JIT steps at 1 row (1.39 ms) and branch steps at 2-3 rows
    (1.55 ms, more host work per step) fitted 0.19 ms per row, 15x the real cost, and the
    planner cut the fan-out to 2.3 branches."""
    gpu = LinearCost(0.01, 0.001, relative_slope=0.01)
    for _ in range(30):
        gpu.observe(1, 0.00139)
        gpu.observe(2, 0.00155)
        gpu.observe(3, 0.00156)
    assert gpu.predict(8) - gpu.predict(1) < 0.1 * gpu.predict(1)


def test_a_wide_spread_of_rows_measures_the_slope():
    cpu = LinearCost(0.01, 0.001, relative_slope=0.03)
    for _ in range(100):
        for rows in (1, 8, 32):
            cpu.observe(rows, 0.02 + 0.002 * rows)  # 10% of a one-row pass per row
    assert cpu.predict(16) == pytest.approx(0.02 + 0.002 * 16, rel=0.1)


def test_a_gpu_like_draft_keeps_the_full_fan_out_at_batch_size_one():
    """A flat cost in rows (a GPU) must not be read as 'each branch costs a forward':
    with only one-row passes observed the planner still fans out to the full budget."""
    policy = SpeculationPolicy(max_drafts=4, max_budget=8, fanout_r=None,
                               backup="auto", relative_row_cost=0.01)
    policy.target_step_s.value = 0.0067
    for _ in range(50):
        policy.step_cost.observe(1, 0.0013)
        policy.glue_cost.observe(1, 0.0015)
    assert policy.replan(num_rows=1, deadline=1.5).budget == 8


def test_a_large_batch_plan_keeps_its_build_near_the_target_step():
    """The H200 at bs 64 (s4-3): a target step of 10 ms, branch steps of 1 ms + 11 us per
    row, n-gram backups. Every round has a miss somewhere, so Cor 16 charges 1 + T_b and
    ignores the build; but the server's round waits for the build (up to the deadline),
    so a budget of 8 (a 25 ms build) costs more than its extra hits bring."""
    policy = make_policy()
    policy.target_step_s.value = 0.010
    for _ in range(50):
        for rows in (64, 256, 512):
            policy.step_cost.observe(rows, 0.001 + 0.000011 * rows)
        policy.glue_cost.observe(320, 0.0016)
    policy.acceptance[SOURCE_CACHE] = AcceptanceEstimate(0.8, prior_weight=1e6)
    plan = policy.replan(num_rows=64, deadline=1.5)
    assert plan.budget < 8
    assert plan.predicted_t_p <= 1.5


def test_just_in_time_drafts_are_timed_apart_from_branch_steps():
    """Measured on the H200 at bs 1: 1.39 ms per JIT token (1 row), 1.55 ms per branch
    step (2-3 rows; copy-on-write and fetch included). The JIT latency comes from JIT
    drafts, and the branch cost stays flat in rows: the fan-out stays full."""
    policy = make_policy()
    policy.target_step_s.value = 0.0067
    assert policy.jit_seconds(1, 4) == pytest.approx(4 * policy.step_cost.predict(1))
    for _ in range(30):
        policy.jit_cost.observe(1, 0.00139)
        policy.step_cost.observe(2, 0.00155)
        policy.step_cost.observe(3, 0.00156)
        policy.glue_cost.observe(5, 0.0015)
    assert policy.jit_seconds(1, 4) == pytest.approx(4 * 0.00139)
    assert policy.replan(num_rows=1, deadline=1.5).budget == 8


def test_a_flat_miss_law_covers_every_outcome_at_batch_size_one():
    """two-h200-qwen7b.jsonl (two H200s), bs 1: hits did not depend on the fan-out (85% at any F >= 1),
    so the fitted r is tiny; Thm 12's closed form then piled the budget on k = K and
    left k = 2, 3 without a branch (52% hits). The integer optimum covers every k."""
    policy = make_policy()
    policy.target_step_s.value = 0.0074
    policy.acceptance[SOURCE_CACHE] = AcceptanceEstimate(0.92, prior_weight=1e6)
    for fanout in (1, 2, 3, 4):
        policy.observe_lookups(np.full(200, fanout), np.arange(200) < 170)
    for _ in range(30):
        policy.step_cost.observe(3, 0.00150)
        policy.step_cost.observe(8, 0.00165)
        policy.glue_cost.observe(5, 0.0024)
        policy.jit_cost.observe(1, 0.00136)
    r, c = policy.law()
    assert r < 0.2 and c == pytest.approx(0.15, abs=0.02)
    plan = policy.replan(num_rows=1, deadline=1.5)
    fanout = policy.fanout(np.array([SOURCE_CACHE]), np.array([4]))[0]
    assert plan.budget >= 5 and (fanout >= 1).all()


def test_replan_shrinks_work_to_fit_the_target_step():
    policy = make_policy()
    policy.step_cost = LinearCost(0.004, 0.0005)  # one branch step ~ half a target step
    policy.glue_cost = LinearCost(0.004, 0.0001)
    plan = policy.replan(num_rows=1, deadline=1.5)
    assert plan.depth < 4 or plan.budget < 8
    cheap = make_policy()
    cheap.step_cost = LinearCost(0.0001, 0.00001)
    cheap.glue_cost = LinearCost(0.0001, 0.00001)
    assert cheap.replan(num_rows=1, deadline=1.5).depth == 4


def test_speculation_is_switched_off_when_it_cannot_pay():
    policy = make_policy()
    policy.plan = type(policy.plan)(budget=8, depth=4, predicted_t_p=0.5)
    assert policy.speculation_pays(1, jit_seconds=0.004, deadline=1.5)
    slow = make_policy()
    slow.plan = type(slow.plan)(budget=8, depth=4, predicted_t_p=4.0)  # build: 4 target steps
    slow.p_hit.value = 0.1
    slow.ngram_tokens.value = 1.0
    assert not slow.speculation_pays(64, jit_seconds=0.05, deadline=1.5)


def test_speculation_stays_on_until_steps_of_both_kinds_were_timed():
    """s5 diagnosis (one H200, bs 1): the first steps' times (a prefill, warm-up) pulled
    the prediction to "off" and the server decoded 64 steps without drafts."""
    policy = SpeculationPolicy(max_drafts=4, max_budget=8, fanout_r=None,
                               backup="auto")
    policy.plan = type(policy.plan)(budget=8, depth=4, predicted_t_p=4.0)  # model: no gain
    policy.p_hit.value = 0.1
    policy.observe_target_step(0.092, verified_drafts=True)
    policy.observe_target_step(0.004, verified_drafts=False)
    assert policy.speculation_pays(1, jit_seconds=0.05, deadline=1.5)
    for _ in range(MIN_STEP_SAMPLES):
        policy.observe_target_step(0.092, verified_drafts=True)
        policy.observe_target_step(0.004, verified_drafts=False)
    assert not policy.speculation_pays(1, jit_seconds=0.05, deadline=1.5)


def test_an_ewma_without_prior_starts_at_its_first_sample():
    mean = Ewma(None, weight=0.2)
    assert mean.value == 0.0 and mean.samples == 0
    assert mean.update(0.007) == pytest.approx(0.007)  # not 0.2 * 0.007
    assert mean.update(0.009) == pytest.approx(0.8 * 0.007 + 0.2 * 0.009)
    assert mean.samples == 2 and Ewma(0.5).update(1.0) == pytest.approx(0.525)


def test_costly_verification_against_cheap_plain_steps():
    """A compute-bound target: verifying 5 tokens per row costs 3 plain steps."""
    policy = make_policy()
    policy.plan = type(policy.plan)(budget=8, depth=4, predicted_t_p=0.8)
    assert policy.speculation_pays(8, jit_seconds=0.004, deadline=1.5)
    policy.target_step_s.value = 0.03
    assert not policy.speculation_pays(8, jit_seconds=0.004, deadline=1.5)


def test_measured_rates_decide_once_both_kinds_of_round_were_seen():
    policy = make_policy()
    policy.plan = type(policy.plan)(budget=8, depth=4, predicted_t_p=4.0)  # model: no gain
    policy.p_hit.value = 0.1
    assert not policy.speculation_pays(64, jit_seconds=0.05, deadline=1.5)
    for _ in range(3):
        policy.observe_round(tokens_per_row=3.0, seconds=0.010, route="ssd")  # 300 tok/s
    assert not policy.speculation_pays(64, jit_seconds=0.05, deadline=1.5)  # plain unseen
    for _ in range(3):
        policy.observe_round(tokens_per_row=1.0, seconds=0.005, route=None)  # 200 tok/s
    assert policy.speculation_pays(64, jit_seconds=0.05, deadline=1.5)
    for _ in range(20):
        policy.observe_round(tokens_per_row=1.0, seconds=0.002, route=None)  # 500 tok/s
    assert not policy.speculation_pays(64, jit_seconds=0.05, deadline=1.5)


def test_measured_rate_corrects_its_start_up_bias():
    from vllm_ssd.saguaro.estimators import MeasuredRate

    rate = MeasuredRate(weight=0.2, min_samples=3)
    rate.update(100.0)
    rate.update(100.0)
    assert rate.value is None
    rate.update(100.0)
    assert rate.value == pytest.approx(100.0)


def test_rounds_with_drafts_are_measured_by_route():
    """Each route keeps its own rate; rounds with drafts read as the preferred route's,
    or as the measured one while the preferred route is unmeasured."""
    policy = make_policy()
    for _ in range(3):
        policy.observe_round(tokens_per_row=2.0, seconds=0.010, route="sd")  # 200 tok/s
    assert policy.route_rates["ssd"].value is None
    assert policy.speculative_rate.value == pytest.approx(200.0)  # ssd unmeasured: sd's
    for _ in range(3):
        policy.observe_round(tokens_per_row=3.0, seconds=0.010, route="ssd")  # 300 tok/s
    assert policy.speculative_rate.value == pytest.approx(300.0)  # ssd preferred
    policy.preferred_route = "sd"
    assert policy.speculative_rate.value == pytest.approx(200.0)
    assert policy.plain_rate.value is None
