"""The step's bookkeeping (statistics, policy observations) runs after the reply: queued by
``step``, done by the next ``build`` (or the next step), never lost or done twice."""
import numpy as np

from tests.unit.test_quiet_steps import make_engine
from vllm_ssd import protocol as P


def step(engine, index: int, delta: list[int]):
    return engine.step(P.StepRequest(
        seq=index, new_requests=[P.NewRequest(slot=0, temperature=0.0)] if index == 0 else [],
        finished_slots=[], slots=P.pack([0]), num_new_tokens=P.pack([len(delta)]),
        new_tokens=P.pack(delta), is_step_delta=P.pack([index > 0], np.uint8),
        max_drafts=P.pack([3]), wants_reply=True))


def test_build_does_the_bookkeeping_the_step_deferred(tiny):
    engine = make_engine(tiny, pays=True)
    step(engine, 0, [1, 40, 41, 42])
    assert engine.observations and engine.stats.scalars["steps"] == 0
    engine.build(lambda: False)
    assert not engine.observations and engine.stats.scalars["steps"] == 1
    reply = step(engine, 1, [7])
    assert engine.stats.scalars["lookups"] == 0  # the second step's lookup: not yet counted
    engine.build(lambda: False)
    assert engine.stats.scalars["steps"] == 2 and engine.stats.scalars["lookups"] == 1
    assert engine.stats.scalars["build_rounds"] >= 1  # the first build's report
    del reply


def test_a_step_without_a_build_in_between_catches_up(tiny):
    engine = make_engine(tiny, pays=True)
    step(engine, 0, [1, 40, 41, 42])
    step(engine, 1, [7])  # no build: the first step's bookkeeping runs first
    assert engine.stats.scalars["steps"] == 1
    engine.observe()
    assert engine.stats.scalars["steps"] == 2 and not engine.observations
