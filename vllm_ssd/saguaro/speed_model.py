"""The SSD speed model (Thm 7 and Cor 16 of Kumar, Dao & May) as pure functions: one
model of a round, used by the build planner, the backup choice, the on/off switch's
prediction and the benchmarks' "predicted" column.

Times are in units of one target verification step (T_p: primary speculator's
cache build, T_b: backup speculator's latency). E_hit / E_miss are the expected
tokens emitted per round after a cache hit / miss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def expected_tokens(acceptance: float, num_drafts: int) -> float:
    """Tokens emitted per round with a capped geometric acceptance: sum_{i=0..n} a^i."""
    a = min(max(acceptance, 0.0), 1.0)
    if a >= 1.0:
        return float(num_drafts + 1)
    return (1.0 - a ** (num_drafts + 1)) / (1.0 - a)


def server_round_throughput(batch_size: int, p_hit: float, e_hit: float, e_miss: float,
                            t_p: float, t_b: float, deadline: float = math.inf) -> float:
    """Tokens per target step of vllm_ssd's draft server, whose cache build runs every
    round (cut once it exceeds ``deadline`` target steps): every round costs
    max(1, min(T_p, deadline)), plus T_b when any row of the batch missed (Cor 16: a round
    waits for every row, so the whole-batch hit probability p^b decides)."""
    p_all = p_hit ** max(batch_size, 1)
    tokens = p_hit * e_hit + (1.0 - p_hit) * e_miss
    return tokens / (max(1.0, min(t_p, deadline)) + (1.0 - p_all) * t_b)


@dataclass(frozen=True)
class BackupOption:
    name: str
    tokens_after_miss: float  # E_miss when this backup drafts the missed rows
    latency: float  # T_b, relative to one target step


def choose_backup(batch_size: int, p_hit: float, e_hit: float, t_p: float,
                  options: list[BackupOption]) -> str:
    """The backup with the highest round throughput at this batch size (Thm 17's b* switch)."""
    return max(options, key=lambda o: server_round_throughput(
        batch_size, p_hit, e_hit, o.tokens_after_miss, t_p, o.latency)).name
