"""One draft-server step: apply outcomes -> look up the cache -> back up misses ->
reply; then (mode ``ssd``) build the next round's cache until the next step arrives."""
from __future__ import annotations

import logging
import time
from functools import partial
from typing import Callable

import numpy as np

from vllm_ssd import protocol as P
from vllm_ssd.server.device.cuda_graphs import graph_rows
from vllm_ssd.server.device.model_runner import ModelRunner
from vllm_ssd.server.draft_passes import DraftPasses
from vllm_ssd.server.kv.block_manager import BlockManager, OutOfBlocks
from vllm_ssd.server.kv.budget import fit_fanout
from vllm_ssd.server.speculation.builder import CacheBuilder
from vllm_ssd.server.speculation.modes import MODES
from vllm_ssd.server.speculation.ngram import ngram_drafts
from vllm_ssd.server.speculation.plan_choice import PlanChooser
from vllm_ssd.server.speculation.policy import SpeculationPolicy
from vllm_ssd.server.speculation.prefill_pacer import PrefillPacer
from vllm_ssd.server.speculation.spec_cache import SpeculationCache
from vllm_ssd.server.state import (SOURCE_CACHE, SOURCE_NEURAL, SOURCE_NGRAM, SOURCE_NONE,
                                   RequestTable)
from vllm_ssd.server.stats import ServerStats
from vllm_ssd.settings import DEVICE_DEFAULTS, SSDSettings

logger = logging.getLogger(__name__)
REPLAN_EVERY = 16  # steps between build plans


class StepEngine:
    def __init__(self, settings: SSDSettings, runner: ModelRunner, max_drafts: int,
                 max_slots: int, max_len: int, stats: ServerStats, core_gain: float = 1.0,
                 shares_target_gpu: bool = False):
        """core_gain: the target's cores x this with the draft's (see ``switch``);
        shares_target_gpu: the draft runs on the target's GPU (see ``route.fixed_route``)."""
        self.settings = settings
        self.mode = MODES["sd" if settings.mode == "sd" else "ssd"]  # this step's route
        self.max_drafts = max_drafts
        self.blocks = BlockManager(runner.num_blocks, runner.block_size, reserved=1)
        self.table = RequestTable(max_slots, max_len, max_drafts, self.blocks)
        self.cache = SpeculationCache(max_slots, max_drafts, settings.fanout_budget)
        self.passes = DraftPasses(runner, settings.saguaro_c, seed=settings.seed)
        self.builder = CacheBuilder(self.passes, self.table, self.cache, self.blocks,
                                    PrefillPacer(settings.prefill_chunk_tokens()))
        self.policy = SpeculationPolicy(max_drafts, settings.fanout_budget, settings.fanout_r,
                                        settings.backup,
                                        DEVICE_DEFAULTS[settings.on_gpu()]["row_cost_prior"])
        if not settings.enforce_eager:
            rows = graph_rows(max_slots, settings.fanout_budget, max_drafts)
            runner.capture_graphs(rows, self.table.block_tables.shape[1])
            self.passes.pad_queries = runner.graphs is not None
        self.stats = stats
        self.plans = PlanChooser(settings, self.policy, stats, core_gain, shares_target_gpu)
        self.rng = np.random.default_rng(settings.seed)
        self.pending_build = np.zeros(0, dtype=np.int64)
        self.num_steps = 0
        self.last_all_hit = False
        self.last_had_drafts = False
        self.last_plan, self.last_route = "off", None  # the last step's plan; its route,
        # None for the first ssd step after another plan (no cache yet: not that route's rate)
        self.observations: list[Callable[[], None]] = []  # deferred by step (see there)

    def step(self, request: P.StepRequest) -> P.StepReply:
        """Outcomes -> lookup -> backup -> reply. Bookkeeping that the reply does not need
        (statistics, the policy's observations) waits in ``self.observations`` for the
        next build, which does it while its glue pass runs on the device."""
        start = time.perf_counter()
        self.observe()  # a previous step's, if no build ran since
        report = self.builder.collect()  # the last build's cache: the round's host sync
        self._lifecycle(request)
        slots = P.unpack(request.slots).astype(np.int64)
        delta_lens = P.unpack(request.num_new_tokens).astype(np.int64)
        caps = np.minimum(P.unpack(request.max_drafts).astype(np.int64), self.max_drafts)
        outcomes = self.table.apply_deltas(slots, delta_lens, P.unpack(request.new_tokens),
                                           P.unpack(request.is_step_delta, np.uint8) > 0)
        sources = self.table.draft_source[slots]
        plan = self.plans.choose(self.num_steps, len(slots))
        speculate = plan != "off"
        if speculate:
            self.mode = MODES[plan]
            time.sleep(self.settings.sim_route_delay_ms.get(plan, 0.0) / 1e3)
        admitted = self._admit(slots, caps > 0) if speculate else np.zeros(len(slots), bool)
        drafts, lens, source, lookup = self._speculate(slots, outcomes,
                                                       np.where(admitted, caps, 0))
        self.table.set_drafts(slots, drafts, lens, source)
        previous = (self.last_had_drafts, self.last_all_hit, self.last_route)  # what
        # produced these outcomes
        self.last_route = plan if plan != "ssd" or self.last_plan == "ssd" else None
        self.last_plan = plan
        wanted = caps > 0
        self.last_all_hit = bool(wanted.any() and (source[wanted] == SOURCE_CACHE).all())
        self.last_had_drafts = bool(lens.sum() > 0)
        self.pending_build = slots[admitted] if self.mode.builds_cache else slots[:0]
        self.num_steps += 1
        keep = np.arange(self.max_drafts)[None, :] < lens[:, None]
        tokens_per_row = float(delta_lens.mean()) if len(delta_lens) else 0.0  # every row's,
        # drafted or not: what the round gave
        self.observations.append(partial(self._observe_step, request, report, outcomes, sources,
                                         lookup, lens, time.perf_counter() - start, tokens_per_row,
                                         *previous))
        return P.StepReply(seq=request.seq, num_drafts=P.pack(lens), draft_tokens=P.pack(drafts[keep]),
                           is_hit=P.pack(source == SOURCE_CACHE, np.uint8),
                           stats=self.stats.snapshot() if request.wants_stats else {},
                           quiet_steps=max(self.plans.switch.quiet_until - self.num_steps, 0),
                           stand_aside=self.plans.stand_aside_reason)

    def observe(self) -> None:
        """Runs the bookkeeping deferred by ``step``."""
        observations, self.observations = self.observations, []
        for observation in observations:
            observation()

    def _observe_step(self, request, report, outcomes, sources, lookup, lens, seconds: float,
                      tokens_per_row: float, had_drafts: bool, all_hit: bool,
                      route: str | None) -> None:
        """tokens_per_row: new tokens per row this step brought; had_drafts, all_hit, route: of
        the round that produced them."""
        self.stats.observe_step(outcomes, sources, lens, seconds)
        if report is not None:
            self._observe_build(report)
        self.policy.observe_outcomes(sources, outcomes.num_accepted, outcomes.num_proposed,
                                     outcomes.is_outcome)
        if lookup is not None:
            self._observe_lookups(*lookup)
        if request.target_step_s > 0:
            self.policy.observe_target_step(request.target_step_s, had_drafts)
            self.stats.observe_target_step(request.target_step_s)
            if tokens_per_row > 0:
                seconds = request.target_step_s + max(request.previous_round_trip_s, 0.0)
                if route is not None or not had_drafts:
                    self.policy.observe_round(tokens_per_row, seconds,
                                              route if had_drafts else None)
                logger.debug("round: %.2f tokens/row in %.1f ms (target %.1f), drafts %s",
                             tokens_per_row, 1e3 * seconds, 1e3 * request.target_step_s,
                             had_drafts)
        if request.previous_round_trip_s > 0:
            self.stats.observe_round_trip(request.previous_round_trip_s, all_hit)

    def _admit(self, slots: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """Rows whose KV fits this round (the rest get no drafts, counted, until it does)."""
        admitted = self.table.admit(slots, wanted)
        self.stats.observe_rows_without_kv(int((wanted & ~admitted).sum()))
        return admitted

    def _lifecycle(self, request: P.StepRequest) -> None:
        finished = np.array(request.finished_slots, dtype=np.int64)
        self.table.release(finished)
        self.cache.clear(finished)
        if request.new_requests:
            new = np.array([r.slot for r in request.new_requests], dtype=np.int64)
            temps = np.array([r.temperature for r in request.new_requests], dtype=np.float32)
            self.table.activate(new, temps)
            self.cache.clear(new)

    def _speculate(self, slots, outcomes, caps):
        """Drafts for every row: cache hits first, then the backup for the rest; and what
        the lookup saw (for ``_observe_lookups``; None without one)."""
        num_rows = len(slots)
        drafts = np.full((num_rows, self.max_drafts), -1, dtype=np.int32)
        lens = np.zeros(num_rows, dtype=np.int64)
        source = np.full(num_rows, SOURCE_NONE, dtype=np.int64)
        lookup = None
        if self.mode.builds_cache:
            hit, fanout, built = self._lookup(slots, outcomes)
            lookup = (fanout, hit.is_hit, outcomes, built)
            drafts[hit.is_hit] = hit.drafts[hit.is_hit]
            lens = np.minimum(hit.num_drafts, caps)
            source[hit.is_hit] = SOURCE_CACHE
        else:
            self.cache.clear(slots)  # a build of an earlier ssd step must never hit later
        uncached = self.table.uncached_tokens(slots)
        missed = ~(source == SOURCE_CACHE) & (caps > 0) & \
            ~self.mode.needs_catch_up(uncached, self.max_drafts)
        rows = np.nonzero(missed)[0]
        if rows.size:
            self._backup(slots, rows, caps, drafts, lens, source)
        drafts[np.arange(self.max_drafts)[None, :] >= lens[:, None]] = -1
        return drafts, lens, source, lookup

    def _lookup(self, slots, outcomes):
        """The cache's answers, the fan-out each row's outcome k had, and which rows had a
        cache built at all (a row still catching up its prompt is no lookup)."""
        if self.settings.sim_hit_rate is not None:
            simulated = self.rng.random(len(slots)) < self.settings.sim_hit_rate
            result = self.cache.any_branch(slots, outcomes.num_accepted)
            result.is_hit &= simulated & outcomes.is_outcome
        else:
            result = self.cache.lookup(slots, outcomes.num_accepted, outcomes.bonus_token,
                                       outcomes.is_outcome)
        fanout = (self.cache.keys[slots, np.clip(outcomes.num_accepted, 0, self.max_drafts)]
                  >= 0).sum(axis=1)
        built = (self.cache.keys[slots] >= 0).reshape(len(slots), -1).any(axis=1)
        self.cache.clear(slots)  # one round's guesses: stale ones must never hit later
        return result, fanout, built

    def _observe_lookups(self, fanout, is_hit, outcomes, built) -> None:
        looked_up = outcomes.is_outcome & built
        self.policy.observe_lookups(fanout[looked_up], is_hit[looked_up])
        if logger.isEnabledFor(logging.DEBUG):
            missed = looked_up & ~is_hit
            logger.debug("lookup: %d of %d hit; missed k %s, their fan-out %s",
                         int(is_hit[looked_up].sum()), int(looked_up.sum()),
                         outcomes.num_accepted[missed].tolist()[:8], fanout[missed].tolist()[:8])
        self.stats.observe_lookups(is_hit[looked_up], outcomes.num_accepted[looked_up])

    def _backup(self, slots, rows, caps, drafts, lens, source) -> None:
        choice, depth = self.mode.backup_plan(self.policy, len(slots), len(rows),
                                              self.max_drafts)
        row_caps = np.minimum(caps[rows], depth)
        start = time.perf_counter()
        if choice == "ngram":
            found, found_lens = ngram_drafts(self.table.tokens[slots[rows]],
                                             self.table.num_tokens[slots[rows]], row_caps,
                                             self.max_drafts)
            source[rows] = SOURCE_NGRAM
        else:
            found, found_lens = self.passes.jit(self.table, slots[rows], row_caps,
                                                 self.settings.fanout_budget)
            source[rows] = SOURCE_NEURAL
            if row_caps.max(initial=0) > 0:
                self.policy.jit_cost.observe(len(rows), (time.perf_counter() - start) / depth)
        drafts[rows] = found
        lens[rows] = found_lens
        self.stats.observe_backup(choice, len(rows), time.perf_counter() - start)

    def build(self, stop: Callable[[], bool]) -> None:
        """Prepares the next round's cache (mode ssd), stopping early on ``stop()``. The
        step's deferred bookkeeping and a due replan run while the glue pass is on the
        device (a new plan applies from the next round)."""
        slots, self.pending_build = self.pending_build, self.pending_build[:0]
        self.builder.release_branches()  # last round's branch KV (off the reply's path)
        if len(slots) == 0 or not self.passes.clock.on_cuda:  # a CPU pass does not overlap
            self.observe()
            if len(slots) == 0:
                return
        fanout = self.policy.fanout(self.table.draft_source[slots], self.table.num_drafts[slots])
        blocks_per_branch = 2 + self.policy.plan.depth // self.blocks.block_size
        fanout = fit_fanout(fanout, self.blocks.num_free // blocks_per_branch)
        deadline = time.perf_counter() + self.settings.build_deadline * \
            self.policy.target_step_s.value
        try:
            self.builder.build(slots, fanout, self.policy.plan.depth,
                               lambda: time.perf_counter() > deadline and stop(),
                               while_glue_runs=lambda: self._between_passes(len(slots)),
                               target_step_s=max(self.policy.target_step_s.value,
                                                 self.policy.plain_step_s.value))
        except OutOfBlocks as error:
            logger.warning("draft KV cache full, skipping this round's cache build: %s", error)
            self.cache.clear(slots)
        finally:
            self.observe()

    def _between_passes(self, num_rows: int) -> None:
        self.observe()
        if self.num_steps % REPLAN_EVERY == 1 and self.settings.build_plan == "auto":
            plan = self.policy.replan(num_rows, self.settings.build_deadline)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("plan for %d rows: %s, miss law (r, c) %s, T_v %.2f ms",
                             num_rows, plan, self.policy.law(),
                             1e3 * self.policy.target_step_s.value)

    def _observe_build(self, report) -> None:
        self.policy.glue_cost.observe(report.num_rows * (self.max_drafts + 1), report.glue_s)
        if report.depth_done:
            self.policy.step_cost.observe(report.num_branches, report.branch_s / report.depth_done)
        t_v = self.policy.target_step_s.value
        self.stats.observe_build(report, t_v)
        plan, cost = self.policy.plan, self.policy.step_cost
        self.stats.observe_plan(plan.budget, plan.depth, float(cost.predict(1)),
                                float(cost.predict(8)))
