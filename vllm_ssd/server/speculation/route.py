"""Which way a speculating step drafts, chosen by measured goodput: a pure decision.

With ``mode: auto`` a step that speculates (the on/off switch of ``switch`` decides that)
takes one of two routes:

- ``ssd``: the speculation cache, built while the target verifies (a hit costs no draft
  forward on the critical path, but the build shares the draft's device, and on one GPU
  the target's);
- ``sd``: a just-in-time draft after each outcome (no build, the draft on the critical path).

Until measured, the cache route runs first where the draft has a device of its own. Where
it shares the target's GPU, ``PlanChooser`` keeps just-in-time drafts without windows (a
build there lengthens the target's step: +47% with Qwen2.5-7B / 0.5B shapes on one H100, and
the cache route measured slower than ``sd`` at every batch size, benchmarks/results/gpu).
The route with the most tokens per row per second of whole rounds (target step + the
proposer's wait) runs; for ROUTE_WINDOW_STEPS of every ROUTE_EXPLORE_EVERY steps the other
route runs, so both stay measured as the regime changes (a window measures its route
anew). The first window comes early (ROUTE_FIRST_WINDOW), while the other route is
unmeasured. Once the preferred route measured clearly faster at about this batch size, the
windows come as seldom as the on/off switch's do then (``switch.exploration_period``). A
switch needs the other route measured ROUTE_HYSTERESIS times faster: measurements of nearly
equal routes do not flap.
"""
from __future__ import annotations

from dataclasses import dataclass

from vllm_ssd.server.speculation.switch import exploration_period

ROUTES = ("ssd", "sd")
ROUTE_EXPLORE_EVERY = 64  # steps between windows of the other route (unless clear)
ROUTE_PHASE = 32  # a window's offset in that period (the on/off switch explores at 0)
ROUTE_WINDOW_STEPS = 8  # steps of one window
ROUTE_FIRST_WINDOW = 16  # the early window, after the on/off switch's early one
ROUTE_HYSTERESIS = 1.05  # the other route must measure this many times faster


@dataclass(frozen=True)
class RouteState:
    preferred: str = "ssd"  # the route steps take outside windows
    window_start: int = -1  # first step of the window in progress (-1: none)
    measured_batch_size: int = 0  # batch size at the end of the last window


@dataclass(frozen=True)
class RouteDecision:
    route: str
    state: RouteState
    window_ended: bool  # a window just ended: the preference was re-judged


def fixed_route(shares_target_gpu: bool) -> str | None:
    """The route ``mode: auto`` keeps without windows: ``sd`` for a draft on the target's GPU
    (its cache builds slow the target's steps); None where routes are measured."""
    return "sd" if shares_target_gpu else None


def other_route(route: str) -> str:
    return ROUTES[1 - ROUTES.index(route)]


def preferred_after_window(preferred: str, rates: dict[str, float | None]) -> str:
    """The preference once a window measured the other route: it moves only where the
    other route measured ROUTE_HYSTERESIS times faster."""
    current, other = rates.get(preferred), rates.get(other_route(preferred))
    if other is None:
        return preferred
    if current is None or other > ROUTE_HYSTERESIS * current:
        return other_route(preferred)
    return preferred


def preferred_margin(preferred: str, rates: dict[str, float | None]) -> float | None:
    """How many times faster the preferred route measured than the other (None: unmeasured)."""
    current, other = rates.get(preferred), rates.get(other_route(preferred))
    if current is None or other is None or other <= 0:
        return None
    return current / other


def window_starts_at(step: int, batch_size: int, rates: dict[str, float | None],
                     state: RouteState) -> bool:
    if rates.get(other_route(state.preferred)) is None and step == ROUTE_FIRST_WINDOW:
        return True
    period = max(ROUTE_EXPLORE_EVERY, exploration_period(
        preferred_margin(state.preferred, rates), batch_size, state.measured_batch_size))
    return step >= period and step % period == ROUTE_PHASE


def choose_route(step: int, batch_size: int, rates: dict[str, float | None],
                 state: RouteState) -> RouteDecision:
    """The route of step number ``step`` at ``batch_size`` rows given each route's measured
    rate (None while unmeasured)."""
    window_ended = False
    if state.window_start >= 0 and step >= state.window_start + ROUTE_WINDOW_STEPS:
        state = RouteState(preferred_after_window(state.preferred, rates), -1, batch_size)
        window_ended = True
    if state.window_start < 0 and window_starts_at(step, batch_size, rates, state):
        state = RouteState(state.preferred, step, state.measured_batch_size)
    route = other_route(state.preferred) if state.window_start >= 0 else state.preferred
    return RouteDecision(route, state, window_ended)
