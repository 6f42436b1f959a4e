"""mode auto on the engine: one route made slower on purpose (the test-only
``sim_route_delay_ms``) and the plan moves to the other within a bounded number of steps,
then comes back once the delay goes. The test plays the target: every draft is accepted,
each target step takes TARGET_STEP_S, and the proposer's wait is the step's wall time."""
import time

import numpy as np
import pytest

from vllm_ssd import protocol as P
from vllm_ssd.server.factory import build_engine
from vllm_ssd.server.speculation.route import ROUTE_FIRST_WINDOW, ROUTE_PHASE, ROUTE_WINDOW_STEPS
from vllm_ssd.server.speculation.switch import CLEAR_EXPLORE_EVERY
from vllm_ssd.settings import SSDSettings

K = 3
TARGET_STEP_S = 0.025
SLOW_MS = 30.0  # slower than a just-in-time draft, not slower than decoding without drafts
PHASE_STEPS = 110  # steps per request (4 tokens a step fit the 512-token context)


def make_engine(tiny, shares_target_gpu=False, **extra):
    settings = SSDSettings(draft_model=str(tiny["draft"]), draft_device="cpu",
                           enforce_eager=True, fanout_budget=2, sim_hit_rate=1.0, backup="neural",
                           sim_ms_per_token=3.0, **extra)
    hello = P.Hello(version=P.PROTOCOL_VERSION, token="", num_speculative_tokens=K,
                    target_vocab_size=512, max_model_len=512, max_num_seqs=2,
                    shares_target_gpu=shares_target_gpu)
    return build_engine(settings, hello)


def play(engine, slot: int, steps: int, finished=()) -> list[int]:
    """One request in ``slot`` for ``steps`` steps; the drafts of each reply."""
    delta, round_trip, drafts = [1, 40, 41, 42], 0.0, []
    for index in range(steps):
        request = P.StepRequest(
            seq=index, new_requests=[P.NewRequest(slot=slot, temperature=0.0)] if index == 0 else [],
            finished_slots=list(finished) if index == 0 else [], slots=P.pack([slot]),
            num_new_tokens=P.pack([len(delta)]), new_tokens=P.pack(delta),
            is_step_delta=P.pack([index > 0], np.uint8), max_drafts=P.pack([K]),
            target_step_s=TARGET_STEP_S if index > 1 else 0.0,
            previous_round_trip_s=round_trip, wants_reply=True)
        start = time.perf_counter()
        reply = engine.step(request)
        round_trip = time.perf_counter() - start
        engine.build(lambda: True)
        tokens = P.unpack(reply.draft_tokens).tolist()
        drafts.append(len(tokens))
        delta = tokens + [7]  # every draft accepted, plus the bonus token
    return drafts


def test_the_plan_leaves_a_slowed_route_and_comes_back_when_it_is_fast_again(tiny):
    engine = make_engine(tiny, sim_route_delay_ms={"ssd": SLOW_MS})
    play(engine, slot=0, steps=PHASE_STEPS)
    assert engine.plans.route.preferred == "sd"
    slowed = dict(engine.stats.scalars)
    assert slowed["steps_sd"] > slowed["steps_ssd"]
    assert engine.policy.route_rates["sd"].value > engine.policy.route_rates["ssd"].value
    engine.settings = engine.settings.model_copy(update={"sim_route_delay_ms": {}})
    play(engine, slot=1, steps=PHASE_STEPS, finished=[0])
    play(engine, slot=0, steps=PHASE_STEPS, finished=[1])
    back_by = CLEAR_EXPLORE_EVERY + ROUTE_PHASE + ROUTE_WINDOW_STEPS  # the next window, were
    assert back_by < 3 * PHASE_STEPS  # the slowed route's loss clear
    assert engine.plans.route.preferred == "ssd"
    before = dict(engine.stats.scalars)
    play(engine, slot=1, steps=40, finished=[0])
    after = engine.stats.scalars
    assert after["steps_ssd"] - before["steps_ssd"] > after["steps_sd"] - before["steps_sd"]
    assert after["hits"] > before["hits"]  # the cache served again


def test_a_draft_on_the_target_gpu_drafts_just_in_time(tiny):
    engine = make_engine(tiny, shares_target_gpu=True)
    play(engine, slot=0, steps=ROUTE_FIRST_WINDOW)
    play(engine, slot=1, steps=3 * ROUTE_WINDOW_STEPS, finished=[0])
    assert engine.stats.scalars["steps_ssd"] == 0 and engine.stats.scalars["steps_sd"] > 0


def test_a_fixed_mode_never_changes_route(tiny):
    engine = make_engine(tiny, mode="ssd", sim_route_delay_ms={"ssd": SLOW_MS})
    play(engine, slot=0, steps=40)
    assert engine.stats.scalars["steps_sd"] == 0 and engine.stats.scalars["steps_ssd"] > 0


def test_a_routes_rate_counts_the_rows_it_gave_no_draft(tiny):
    """Tokens per row of a round are every row's new tokens: a row left without drafts (a
    miss with no backup) gives one token and pulls the route's rate down."""
    engine = make_engine(tiny, mode="ssd")
    slots = [0, 1]

    def step(index, deltas, tokens, target_step_s):
        new = [P.NewRequest(slot=s, temperature=0.0) for s in slots] if index == 0 else []
        request = P.StepRequest(
            seq=index, new_requests=new, finished_slots=[], slots=P.pack(slots),
            num_new_tokens=P.pack(deltas), new_tokens=P.pack(tokens),
            is_step_delta=P.pack([index > 0] * 2, np.uint8), max_drafts=P.pack([K, K]),
            target_step_s=target_step_s, previous_round_trip_s=0.0, wants_reply=True)
        engine.step(request)
        engine.observe()

    step(0, [4, 4], [1, 2, 3, 4] * 2, 0.0)
    step(1, [1, 1], [5, 5], 0.0)
    for index in range(2, 5):  # row 0: three drafts and the bonus; row 1: the bonus alone
        step(index, [4, 1], [6, 7, 8, 9, 6], 0.02)
    assert engine.policy.route_rates["ssd"].value == pytest.approx((4 + 1) / 2 / 0.02)
