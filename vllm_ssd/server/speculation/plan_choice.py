"""Each step's plan: no drafts (``off``), just-in-time drafts (``sd``) or the speculation
cache (``ssd``), from measured goodput.

Two pure decisions make it: the on/off switch (``switch``: speculation on where rounds with
drafts measured more tokens per second than rounds without, and standing aside for good
where a CPU draft's cores would serve the target better) and, for a step that speculates
under ``mode: auto``, the route (``route``: the faster of ``sd`` and ``ssd``). ``mode: ssd``
or ``sd`` fixes the route; ``sd``, ``build_plan: full`` or a fixed ``backup`` keep
speculation on.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from vllm_ssd.saguaro.estimators import MeasuredRate
from vllm_ssd.server.speculation.policy import SpeculationPolicy
from vllm_ssd.server.speculation.route import RouteState, choose_route, fixed_route
from vllm_ssd.server.speculation.switch import SwitchState, decide, stand_aside_verdict
from vllm_ssd.server.stats import ServerStats
from vllm_ssd.settings import SSDSettings

logger = logging.getLogger(__name__)


class PlanChooser:
    def __init__(self, settings: SSDSettings, policy: SpeculationPolicy, stats: ServerStats,
                 core_gain: float = 1.0, shares_target_gpu: bool = False):
        """core_gain: the target's cores x this with the draft's (see ``switch``);
        shares_target_gpu: the draft runs on the target's GPU (see ``route.fixed_route``)."""
        self.settings = settings
        self.policy = policy
        self.stats = stats
        self.core_gain = core_gain
        self.switch = SwitchState()
        self.route = RouteState()
        self.fixed_route = fixed_route(shares_target_gpu)
        if settings.mode == "auto" and self.fixed_route:
            logger.info("speculation route: sd (the draft shares the target's GPU; "
                        "mode: ssd forces the speculation cache)")
        elif settings.mode == "auto":
            logger.info("speculation route: ssd first (the draft has a device of its own), "
                        "sd measured in windows")
        self.stand_aside_reason = ""  # set once speculation stands aside for good

    def may_switch_off(self) -> bool:
        s = self.settings
        return s.mode != "sd" and s.build_plan == "auto" and s.backup == "auto"

    def choose(self, step: int, batch_size: int) -> str:
        """The plan of step number ``step``: ``off``, ``sd`` or ``ssd``."""
        route = self._route(step, batch_size)
        plan = route if self._speculates(step, batch_size) else "off"
        self.stats.observe_plan_choice(plan)
        return plan

    def _route(self, step: int, batch_size: int) -> str:
        if self.settings.mode != "auto":
            return self.settings.mode
        if self.fixed_route:
            return self.fixed_route
        rates = {name: rate.value for name, rate in self.policy.route_rates.items()}
        decision = choose_route(step, batch_size, rates, self.route)
        if decision.window_ended:
            logger.info("speculation route %s -> %s: %s tokens/s per row measured by route",
                        self.route.preferred, decision.state.preferred,
                        {name: round(rate, 1) for name, rate in rates.items() if rate})
        if decision.state.window_start == step:  # measured anew, not blended with old rounds
            self.policy.route_rates[decision.route] = MeasuredRate()
        self.route = decision.state
        self.policy.preferred_route = decision.state.preferred
        return decision.route

    def _speculates(self, step: int, batch_size: int) -> bool:
        """Whether this step speculates (see ``switch``); always where the mode or the
        settings fix it."""
        if not self.may_switch_off():
            return True
        if self.stand_aside_reason:
            return False
        pays = False
        if step >= self.switch.quiet_until:
            jit = self.policy.jit_seconds(batch_size, self.policy.plan.depth)
            pays = self.policy.speculation_pays(batch_size, jit, self.settings.build_deadline)
        margin = self.policy.measured_margin()
        decision = decide(step, batch_size, pays, margin, self.switch)
        self.switch = replace(decision.state, judged=margin is not None)
        if decision.window_ended or not (decision.state.judged or margin is None):
            logger.info("speculation %s: %s vs %s tokens/s per row measured with / without "
                        "drafts", "on" if pays else "off", self.policy.speculative_rate.value,
                        self.policy.plain_rate.value)
            if self.settings.stand_aside:
                self._judge_standing_aside()
        return decision.speculate

    def _judge_standing_aside(self) -> None:
        """At a window end: stand aside for good where speculation measured a loss even
        against plain decoding on the target's cores plus the draft's."""
        policy = self.policy
        speculative, plain = policy.speculative_rate.value, policy.plain_rate.value
        verdict, losing = stand_aside_verdict(speculative, plain, self.core_gain,
                                              self.switch.losing_windows)
        self.switch = replace(self.switch, losing_windows=losing)
        if not verdict:
            return
        self.stand_aside_reason = (
            f"rounds with drafts made {speculative:.2f} tokens/s per row, rounds without "
            f"{plain:.2f} (x{self.core_gain:.1f} cores once the draft's are free); a draft "
            f"forward takes {1e3 * float(policy.step_cost.predict(1)):.1f} ms against a "
            f"target step of {1e3 * (policy.target_step_s.value or 0.0):.1f} ms")
        self.stats.observe_stood_aside()
        logger.warning("speculation stands aside for good: %s", self.stand_aside_reason)
