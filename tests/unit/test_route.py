"""The route of a speculating step as a pure decision: an early window while the other
route is unmeasured, periodic windows after, and a switch only on a clear enough margin."""
from vllm_ssd.server.speculation.switch import CLEAR_EXPLORE_EVERY, CLEAR_MARGIN
from vllm_ssd.server.speculation.route import (ROUTE_EXPLORE_EVERY, ROUTE_FIRST_WINDOW, ROUTE_HYSTERESIS,
                                   ROUTE_PHASE, ROUTE_WINDOW_STEPS, RouteState, choose_route,
                                   fixed_route, preferred_after_window)


def run(rates_at, steps: int, state=RouteState(), batch_at=lambda step: 4):
    """rates_at(step) -> rates, batch_at(step) -> batch size; the route of each step and
    the final state."""
    routes = []
    for step in range(steps):
        decision = choose_route(step, batch_at(step), rates_at(step), state)
        state = decision.state
        routes.append(decision.route)
    return routes, state


def window(start: int) -> list[int]:
    return list(range(start, start + ROUTE_WINDOW_STEPS))


def test_the_other_route_is_tried_early_then_periodically():
    routes, state = run(lambda step: {"ssd": 1.2, "sd": 1.0 if step >= 20 else None},
                        2 * ROUTE_EXPLORE_EVERY + ROUTE_PHASE + ROUTE_WINDOW_STEPS)
    sd_steps = [i for i, route in enumerate(routes) if route == "sd"]
    assert sd_steps == window(ROUTE_FIRST_WINDOW) + window(ROUTE_EXPLORE_EVERY + ROUTE_PHASE) + \
        window(2 * ROUTE_EXPLORE_EVERY + ROUTE_PHASE)
    assert state.preferred == "ssd"


def test_a_faster_route_is_taken_at_the_window_end_and_kept():
    routes, state = run(lambda step: {"ssd": 1.0, "sd": 1.3 if step >= 20 else None},
                        ROUTE_EXPLORE_EVERY + ROUTE_PHASE + ROUTE_WINDOW_STEPS + 2)
    switched = ROUTE_FIRST_WINDOW + ROUTE_WINDOW_STEPS
    assert routes[:ROUTE_FIRST_WINDOW] == ["ssd"] * ROUTE_FIRST_WINDOW
    assert set(routes[ROUTE_FIRST_WINDOW:switched]) == {"sd"}
    probe = window(ROUTE_EXPLORE_EVERY + ROUTE_PHASE)  # now the cache is the one explored
    assert [i for i, route in enumerate(routes) if route == "ssd" and i >= switched] == probe
    assert state.preferred == "sd"


def test_nearly_equal_routes_do_not_flap():
    assert preferred_after_window("ssd", {"ssd": 1.0, "sd": ROUTE_HYSTERESIS * 0.99}) == "ssd"
    assert preferred_after_window("ssd", {"ssd": 1.0, "sd": ROUTE_HYSTERESIS * 1.01}) == "sd"
    assert preferred_after_window("sd", {"ssd": None, "sd": 1.0}) == "sd"  # unmeasured
    assert preferred_after_window("sd", {"ssd": 1.0, "sd": None}) == "ssd"


def test_a_clear_margin_at_the_same_batch_size_makes_windows_rare():
    def clear(step):
        return {"ssd": CLEAR_MARGIN * 1.1, "sd": 1.0 if step >= 20 else None}
    steps = 2 * CLEAR_EXPLORE_EVERY
    routes, _ = run(clear, steps)
    sd_steps = [i for i, route in enumerate(routes) if route == "sd"]
    assert sd_steps == window(ROUTE_FIRST_WINDOW) + window(CLEAR_EXPLORE_EVERY + ROUTE_PHASE)
    # the batch grew past 2x the one measured: the next window comes at the usual period
    routes, _ = run(clear, steps, batch_at=lambda step: 4 if step < 100 else 64)
    sd_steps = [i for i, route in enumerate(routes) if route == "sd"]
    assert sd_steps[:16] == window(ROUTE_FIRST_WINDOW) + window(2 * ROUTE_EXPLORE_EVERY + ROUTE_PHASE)


def test_a_preference_for_just_in_time_drafts_still_measures_the_cache_early():
    assert fixed_route(shares_target_gpu=True) == "sd" and fixed_route(False) is None
    routes, state = run(lambda step: {"sd": 1.2, "ssd": 1.0 if step >= 20 else None},
                        ROUTE_EXPLORE_EVERY, state=RouteState(preferred="sd"))
    assert [i for i, route in enumerate(routes) if route == "ssd"] == window(ROUTE_FIRST_WINDOW)
    assert state.preferred == "sd"
