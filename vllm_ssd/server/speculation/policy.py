"""Live decisions of the draft server: fan-out per row, the backup for missed
rows (Cor 16 / Thm 17), and the build plan (budget B, depth D) that fits one
target step. Everything observable feeds back through ``observe_*``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vllm_ssd.saguaro.estimators import (AcceptanceEstimate, Ewma, LinearCost, MeasuredRate,
                                         PowerLawMissEstimate)
from vllm_ssd.saguaro.fanout import (capped_geometric_pmf, fanout_table, power_law_miss,
                                     saguaro_fanout)
from vllm_ssd.saguaro.speed_model import (BackupOption, choose_backup, expected_tokens,
                                          server_round_throughput)
from vllm_ssd.server.state import SOURCE_CACHE, SOURCE_NEURAL, SOURCE_NGRAM

MIN_STEP_SAMPLES = 4  # target steps of each kind before the round model may say "off"
MAX_MISS_AT_ONE = 0.9  # the planned miss probability of a single branch, at most


@dataclass(frozen=True)
class BuildPlan:
    budget: int  # branches per request (sum of F_k)
    depth: int  # drafts decoded per branch
    predicted_t_p: float  # cache build time / target step


class SpeculationPolicy:
    def __init__(self, max_drafts: int, max_budget: int, fanout_r: float | None,
                 backup: str, relative_row_cost: float = 0.03):
        """fanout_r: the miss law's exponent r when given (the ``fanout_r`` setting), else
        estimated from the hits with a prior of 1; relative_row_cost: the prior cost of one
        more row in a draft forward, as a fraction of a one-row forward (about 0.01 on a
        GPU, 0.03 on a CPU core; see benchmarks/profile_draft.py)."""
        self.max_drafts = max_drafts
        self.max_budget = max_budget
        self.backup_setting = backup
        self.fanout_r = fanout_r  # None: fitted to the observed misses
        self.acceptance = [AcceptanceEstimate(p) for p in (0.0, 0.7, 0.7, 0.2)]
        self.miss_law = PowerLawMissEstimate(fanout_r or 1.0, max_budget)
        self.p_hit = Ewma(0.5)
        self.target_step_s = Ewma(None, weight=0.2)  # a target step verifying drafts
        self.plain_step_s = Ewma(None, weight=0.2)  # a target step without drafts
        # measured tokens per row per second of whole rounds (target step + proposer wait)
        # by the route that drafted them (see ``route``) and without drafts
        self.route_rates = {"ssd": MeasuredRate(), "sd": MeasuredRate()}
        self.plain_rate = MeasuredRate()
        self.preferred_route = "ssd"  # the route speculating steps take outside windows
        # seconds per draft forward: a branch step and a glue pass of a cache build; per
        # drafted token of a just-in-time draft (its catch-up, decode and fetch included)
        self.step_cost = LinearCost(0.01, 0.001, relative_slope=relative_row_cost)
        self.glue_cost = LinearCost(0.01, 0.001, relative_slope=relative_row_cost)
        self.jit_cost = LinearCost(0.01, 0.001, relative_slope=relative_row_cost)
        self.ngram_tokens = Ewma(1.2)
        self.plan = BuildPlan(max_budget, max_drafts, 0.0)
        self._fanout_tables = self._make_fanout_tables()

    def _make_fanout_tables(self) -> np.ndarray:
        r, c = self.law()
        return np.stack([fanout_table(self.plan.budget, est.value, self.max_drafts, r, c)
                         for est in self.acceptance])  # [sources, n + 1, n + 1]

    def law(self) -> tuple[float, float]:
        """(r, c) of the miss law c F^(-r) the fan-out is planned with (r fixed by the
        settings, or fitted); c is kept below MAX_MISS_AT_ONE: the draft's top guess at a
        position hits at least sometimes, so one branch is never worthless."""
        r, c = self.miss_law.law()
        return (r if self.fanout_r is None else self.fanout_r), min(c, MAX_MISS_AT_ONE)

    def observe_outcomes(self, sources: np.ndarray, num_accepted: np.ndarray,
                         num_proposed: np.ndarray, is_outcome: np.ndarray) -> None:
        for source in (SOURCE_CACHE, SOURCE_NEURAL, SOURCE_NGRAM):
            rows = is_outcome & (sources == source)
            self.acceptance[source].observe(num_accepted[rows], num_proposed[rows])
        ngram_rows = is_outcome & (sources == SOURCE_NGRAM)
        if ngram_rows.any():
            self.ngram_tokens.update(float(num_accepted[ngram_rows].mean()) + 1.0)

    def observe_lookups(self, fanout_at_outcome: np.ndarray, is_hit: np.ndarray) -> None:
        if len(is_hit):
            self.miss_law.observe(fanout_at_outcome, is_hit)
            self.p_hit.update(float(is_hit.mean()), count=len(is_hit))

    def fanout(self, sources: np.ndarray, num_drafts: np.ndarray) -> np.ndarray:
        """F_k per row [R, max_drafts + 1] from each row's draft source and draft count."""
        return self._fanout_tables[sources, np.minimum(num_drafts, self.max_drafts)]

    def jit_seconds(self, num_rows: int, depth: int) -> float:
        """Predicted latency of a just-in-time draft of ``depth`` tokens for num_rows rows
        (from branch steps until one was measured)."""
        cost = self.jit_cost if self.jit_cost.observed else self.step_cost
        return depth * cost.predict(num_rows)

    def _backup_options(self, jit_seconds: float, depth: int | None = None) -> list[BackupOption]:
        t_v = max(self.target_step_s.value, 1e-6)
        a_neural = self.acceptance[SOURCE_NEURAL].value
        neural_tokens = expected_tokens(a_neural, depth or self.plan.depth)
        return [BackupOption("neural", neural_tokens, jit_seconds / t_v),
                BackupOption("ngram", self.ngram_tokens.value, 0.0)]

    def choose_backup(self, batch_size: int, jit_seconds: float) -> str:
        if self.backup_setting != "auto":
            return self.backup_setting
        e_hit = expected_tokens(self.acceptance[SOURCE_CACHE].value, self.plan.depth)
        return choose_backup(batch_size, self.p_hit.value, e_hit, self.plan.predicted_t_p,
                             self._backup_options(jit_seconds))

    def observe_target_step(self, seconds: float, verified_drafts: bool) -> None:
        (self.target_step_s if verified_drafts else self.plain_step_s).update(seconds)

    @property
    def speculative_rate(self) -> MeasuredRate:
        """Rounds with drafts: the preferred route's, or the other's while it is unmeasured."""
        preferred = self.route_rates[self.preferred_route]
        if preferred.value is not None:
            return preferred
        return max(self.route_rates.values(), key=lambda rate: rate.samples)

    def observe_round(self, tokens_per_row: float, seconds: float, route: str | None) -> None:
        """route: the route that drafted the round (None: a round without drafts)."""
        rate = self.plain_rate if route is None else self.route_rates[route]
        rate.update(tokens_per_row / seconds)

    def measured_margin(self) -> float | None:
        """How many times faster the better of rounds with / without drafts was measured;
        None until both were."""
        speculative, plain = self.speculative_rate.value, self.plain_rate.value
        if speculative is None or plain is None or min(speculative, plain) <= 0:
            return None
        return max(speculative, plain) / min(speculative, plain)

    def speculation_pays(self, batch_size: int, jit_seconds: float, deadline: float) -> bool:
        """Once both kinds of round were measured: whether rounds with drafts produced more
        tokens per second than rounds without. Before that, whether the server's round model
        predicts more tokens per second than plain decoding (one token per measured plain
        step) with the best backup at this batch size; verifying drafts can cost more than a
        plain step (a compute-bound CPU)."""
        speculative, plain = self.speculative_rate.value, self.plain_rate.value
        if speculative is not None and plain is not None:
            return speculative >= plain
        if min(self.target_step_s.samples, self.plain_step_s.samples) < MIN_STEP_SAMPLES:
            return True  # too few steps of either kind to predict from: speculate, measure
        e_hit = expected_tokens(self.acceptance[SOURCE_CACHE].value, self.plan.depth)
        best = max(server_round_throughput(batch_size, self.p_hit.value, e_hit,
                                           o.tokens_after_miss, self.plan.predicted_t_p,
                                           o.latency, deadline)
                   for o in self._backup_options(jit_seconds))
        return best * self.plain_step_s.value / self.target_step_s.value >= 1.0

    def replan(self, num_rows: int, deadline: float) -> BuildPlan:
        """Chooses (B, D) maximising the server's round throughput with the fitted costs."""
        t_v = self.target_step_s.value
        if t_v <= 0 or num_rows == 0:
            self._fanout_tables = self._make_fanout_tables()
            return self.plan
        a = self.acceptance[SOURCE_CACHE].value
        pmf = capped_geometric_pmf(a, self.max_drafts)
        miss = power_law_miss(self.max_budget, *self.law())
        best, best_score = self.plan, -1.0
        for budget in range(1, self.max_budget + 1):
            fanout = saguaro_fanout(budget, pmf, miss)
            p_hit = float((pmf * (1.0 - miss[fanout])).sum())
            for depth in range(1, self.max_drafts + 1):
                score, t_p = self._plan_score(num_rows, budget, depth, p_hit, deadline, t_v)
                if score > best_score:
                    best, best_score = BuildPlan(budget, depth, t_p), score
        self.plan = best
        self._fanout_tables = self._make_fanout_tables()
        return best

    def _plan_score(self, num_rows: int, budget: int, depth: int, p_hit: float,
                    deadline: float, t_v: float) -> tuple[float, float]:
        """(tokens per target step, T_p) of one plan: every round waits for the build up
        to ``deadline`` target steps, a build cut there has decoded fewer drafts, and a
        round with a miss adds the best backup's latency and gets its tokens."""
        a = self.acceptance[SOURCE_CACHE].value
        glue = self.glue_cost.predict(num_rows * (self.max_drafts + 1))
        step = self.step_cost.predict(num_rows * budget)
        t_p = float((glue + depth * step) / t_v)
        depth_done = min(depth, max(1, int((deadline * t_v - glue) / max(step, 1e-9))))
        jit = self.jit_seconds(num_rows, depth)
        score = max(server_round_throughput(
            num_rows, p_hit, expected_tokens(a, depth_done), o.tokens_after_miss, t_p,
            o.latency, deadline) for o in self._backup_options(jit, depth))
        return score, t_p
