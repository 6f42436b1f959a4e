"""The SSD speed model (Thm 7 and Cor 16 of Kumar, Dao & May) as pure functions.

Times are in units of one target verification step (T_p: primary speculator's
cache build, T_b: backup speculator's latency). E_hit / E_miss are the expected
tokens emitted per round after a cache hit / miss.
"""
from __future__ import annotations

from dataclasses import dataclass


def expected_tokens(acceptance: float, num_drafts: int) -> float:
    """Tokens emitted per round with a capped geometric acceptance: sum_{i=0..n} a^i."""
    a = min(max(acceptance, 0.0), 1.0)
    if a >= 1.0:
        return float(num_drafts + 1)
    return (1.0 - a ** (num_drafts + 1)) / (1.0 - a)


def sd_speedup(tokens_per_round: float, draft_time: float) -> float:
    """Plain speculative decoding: drafting (draft_time) and verification (1) in series."""
    return tokens_per_round / (1.0 + draft_time)


def ssd_speedup(p_hit: float, e_hit: float, e_miss: float, t_p: float, t_b: float) -> float:
    """Thm 7: per-round speedup of SSD over autoregressive decoding (batch size 1)."""
    return batch_throughput(1, p_hit, e_hit, e_miss, t_p, t_b)


def batch_throughput(batch_size: int, p_hit: float, e_hit: float, e_miss: float,
                     t_p: float, t_b: float) -> float:
    """Cor 16: a round waits for every row, so the whole-batch hit probability p^b
    decides whether the step costs max(1, T_p) or 1 + T_b."""
    p_all = p_hit ** max(batch_size, 1)
    tokens = p_hit * e_hit + (1.0 - p_hit) * e_miss
    time = p_all * max(1.0, t_p) + (1.0 - p_all) * (1.0 + t_b)
    return tokens / time


def server_round_throughput(batch_size: int, p_hit: float, e_hit: float, e_miss: float,
                            t_p: float, t_b: float, deadline: float) -> float:
    """Tokens per target step of vllm_ssd's draft server, whose cache build runs every
    round (cut once it exceeds ``deadline`` target steps): every round costs
    max(1, min(T_p, deadline)), plus T_b when any row of the batch missed."""
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
    """The backup with the highest Cor 16 throughput at this batch size (Thm 17's b* switch)."""
    return max(options, key=lambda o: batch_throughput(
        batch_size, p_hit, e_hit, o.tokens_after_miss, t_p, o.latency)).name


def critical_batch_size(p_hit: float, e_hit: float, t_p: float, slow: BackupOption,
                        fast: BackupOption, max_batch: int = 1024) -> int | None:
    """Smallest batch size at which the fast backup beats the slow one (b*), if any."""
    for b in range(1, max_batch + 1):
        if choose_backup(b, p_hit, e_hit, t_p, [slow, fast]) == fast.name:
            return b
    return None


def plan_depth(max_depth: int, acceptance: float, p_hit: float, e_miss: float, t_b: float,
               batch_size: int, build_time_of_depth) -> tuple[int, float]:
    """Branch depth D (drafts per cached branch) maximising Cor 16 throughput.

    ``build_time_of_depth(D)`` predicts T_p for depth D. A shallower tree returns
    fewer drafts on a hit but can finish inside one target step. Returns (D, T_p(D)).
    """
    best = (max_depth, build_time_of_depth(max_depth))
    best_score = -1.0
    for depth in range(1, max_depth + 1):
        t_p = build_time_of_depth(depth)
        score = batch_throughput(batch_size, p_hit, expected_tokens(acceptance, depth),
                                 e_miss, t_p, t_b)
        if score > best_score + 1e-9:
            best, best_score = (depth, t_p), score
    return best
