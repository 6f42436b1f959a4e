"""Cumulative counters of the draft server, shipped with every reply. ``ServerStats`` is
their one owner: every count goes through one of its ``observe_*`` methods (``scalars`` is
for reading).

Names are stable: the proposer logs them, ``vllm_ssd.vllm_seam.metrics`` exports them as
``vllm:ssd_*`` Prometheus series. Vectors are flattened as ``name.i``.
"""
from __future__ import annotations

import numpy as np

from vllm_ssd.server.state import SOURCE_CACHE, SOURCE_NEURAL

SCALARS = (
    "steps", "rows", "lookups", "hits", "drafted_tokens", "outcomes", "accepted_tokens",
    "step_seconds", "build_rounds", "build_seconds", "glue_seconds", "build_fraction_sum",
    "build_wait_seconds", "branches",
    "branch_depth_sum", "backup_neural_rows", "backup_ngram_rows", "backup_neural_seconds",
    "backup_ngram_seconds", "backup_neural_steps", "backup_ngram_steps", "restarts",
    "outcomes_after_hit", "accepted_after_hit", "outcomes_after_backup", "accepted_after_backup",
    "round_trips", "round_trip_seconds", "round_trips_all_hit", "round_trip_all_hit_seconds",
    "steps_without_speculation", "plan_budget_sum", "plan_depth_sum", "step_cost_1_row_s_sum",
    "step_cost_8_rows_s_sum", "target_steps", "target_step_seconds",
    "rejected_frames", "foreign_frames", "deadline_misses", "rows_without_kv", "stood_aside",
    "steps_sd", "steps_ssd",
)


class ServerStats:
    def __init__(self, max_drafts: int, base: dict[str, float] | None = None):
        self.max_drafts = max_drafts
        self.scalars = dict.fromkeys(SCALARS, 0.0)
        self.accepted_length = np.zeros(max_drafts + 1)  # histogram of k over outcomes
        self.accepted_per_pos = np.zeros(max_drafts)
        self.proposed_per_pos = np.zeros(max_drafts)
        self.hits_per_k = np.zeros(max_drafts + 1)
        self.lookups_per_k = np.zeros(max_drafts + 1)
        if base:
            self.restore(base)

    def observe_step(self, outcomes, previous_source: np.ndarray, lens: np.ndarray,
                     seconds: float) -> None:
        """previous_source: which speculator drafted the round each outcome verifies."""
        s = self.scalars
        rows = outcomes.is_outcome & (outcomes.num_proposed > 0)
        for name, which in (("hit", previous_source == SOURCE_CACHE),
                            ("backup", previous_source >= SOURCE_NEURAL)):
            s[f"outcomes_after_{name}"] += float((rows & which).sum())
            s[f"accepted_after_{name}"] += float(outcomes.num_accepted[rows & which].sum())
        k, proposed = outcomes.num_accepted[rows], outcomes.num_proposed[rows]
        s["steps"] += 1
        s["rows"] += len(lens)
        s["drafted_tokens"] += float(proposed.sum())  # verified, not merely sent: a reply
        # the proposer dropped as late brings no outcome and counts nothing
        s["outcomes"] += float(rows.sum())
        s["accepted_tokens"] += float(k.sum())
        s["step_seconds"] += seconds
        np.add.at(self.accepted_length, np.clip(k, 0, self.max_drafts), 1)
        positions = np.arange(self.max_drafts)[None, :]
        self.proposed_per_pos += (positions < proposed[:, None]).sum(axis=0)
        self.accepted_per_pos += (positions < k[:, None]).sum(axis=0)

    def observe_lookups(self, is_hit: np.ndarray, k: np.ndarray) -> None:
        self.scalars["lookups"] += len(is_hit)
        self.scalars["hits"] += float(is_hit.sum())
        k = np.clip(k, 0, self.max_drafts)
        np.add.at(self.lookups_per_k, k, 1)
        np.add.at(self.hits_per_k, k, is_hit.astype(np.float64))

    def observe_backup(self, kind: str, rows: int, seconds: float) -> None:
        self.scalars[f"backup_{kind}_rows"] += rows
        self.scalars[f"backup_{kind}_steps"] += 1
        self.scalars[f"backup_{kind}_seconds"] += seconds

    def observe_round_trip(self, seconds: float, all_hit: bool) -> None:
        """The proposer's wait for a reply (IPC + lookup + any backup drafting)."""
        self.scalars["round_trips"] += 1
        self.scalars["round_trip_seconds"] += seconds
        if all_hit:
            self.scalars["round_trips_all_hit"] += 1
            self.scalars["round_trip_all_hit_seconds"] += seconds

    def observe_target_step(self, seconds: float) -> None:
        """vLLM's step between two proposer calls, as the proposer timed it (the target's
        forward, verification and scheduling: T_v as SSD sees it)."""
        self.scalars["target_steps"] += 1
        self.scalars["target_step_seconds"] += seconds

    def observe_plan(self, budget: int, depth: int, cost_1_row: float, cost_8_rows: float) -> None:
        """The build plan in force and the fitted branch-step cost, once per build round."""
        s = self.scalars
        s["plan_budget_sum"] += budget
        s["plan_depth_sum"] += depth
        s["step_cost_1_row_s_sum"] += cost_1_row
        s["step_cost_8_rows_s_sum"] += cost_8_rows

    def observe_plan_choice(self, plan: str) -> None:
        """A step's plan: ``off``, ``sd`` or ``ssd``."""
        self.scalars["steps_without_speculation" if plan == "off" else f"steps_{plan}"] += 1.0

    def observe_build(self, report, target_step_s: float) -> None:
        s = self.scalars
        seconds = report.glue_s + report.branch_s
        s["build_rounds"] += 1
        s["build_seconds"] += seconds
        s["glue_seconds"] += report.glue_s
        s["build_wait_seconds"] += report.wait_s
        s["build_fraction_sum"] += seconds / target_step_s if target_step_s > 0 else 0.0
        s["branches"] += report.num_branches
        s["branch_depth_sum"] += report.depth_done

    def observe_rows_without_kv(self, rows: int) -> None:
        """Rows that wanted drafts but found no free draft KV blocks this round."""
        self.scalars["rows_without_kv"] += float(rows)

    def observe_deadline_misses(self, total: int) -> None:
        """The proposer's own count of steps whose drafts came too late (cumulative)."""
        self.scalars["deadline_misses"] = max(self.scalars["deadline_misses"], float(total))

    def observe_stood_aside(self) -> None:
        self.scalars["stood_aside"] = 1.0

    def observe_dropped_frame(self, foreign: bool) -> None:
        """A frame the server dropped; ``foreign``: it came from a peer other than the
        proposer."""
        self.scalars["rejected_frames"] += 1.0
        if foreign:
            self.scalars["foreign_frames"] += 1.0

    def snapshot(self) -> dict[str, float]:
        out = dict(self.scalars)
        for name in ("accepted_length", "accepted_per_pos", "proposed_per_pos",
                     "hits_per_k", "lookups_per_k"):
            for i, value in enumerate(getattr(self, name)):
                out[f"{name}.{i}"] = float(value)
        return out

    def restore(self, base: dict[str, float]) -> None:
        for key, value in base.items():
            name, _, index = key.partition(".")
            if not index and name in self.scalars:
                self.scalars[name] = float(value)
            elif index and hasattr(self, name) and int(index) < len(getattr(self, name)):
                getattr(self, name)[int(index)] = float(value)
