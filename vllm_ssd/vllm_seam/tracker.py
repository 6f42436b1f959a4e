"""Maps vLLM's batch rows to draft-server slots and tracks what the server knows.

A request gets a slot when it first appears in the persistent batch and loses it
when it leaves (finished, aborted or preempted; a resumed request is new again).
``num_synced[slot]`` counts the committed tokens already sent to the server.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BatchSync:
    slots: np.ndarray  # [B] slot of each batch row
    new_rows: np.ndarray  # rows whose request is new to the server
    finished_slots: list[int]  # slots of requests that left the batch


class RequestTracker:
    def __init__(self, max_slots: int):
        self.max_slots = max_slots
        self.slot_of: dict[str, int] = {}
        self.free_slots = list(range(max_slots - 1, -1, -1))
        self.num_synced = np.zeros(max_slots, dtype=np.int64)
        self.token_limit = np.zeros(max_slots, dtype=np.int64)  # prompt + max_tokens

    def sync(self, req_ids: list[str]) -> BatchSync:
        current = set(req_ids)
        finished = [slot for req_id, slot in self.slot_of.items() if req_id not in current]
        for req_id in [r for r in self.slot_of if r not in current]:
            self.free_slots.append(self.slot_of.pop(req_id))
        new_rows = [row for row, req_id in enumerate(req_ids) if req_id not in self.slot_of]
        for row in new_rows:
            slot = self.free_slots.pop()
            self.slot_of[req_ids[row]] = slot
            self.num_synced[slot] = 0
        slots = np.fromiter((self.slot_of[r] for r in req_ids), dtype=np.int64, count=len(req_ids))
        return BatchSync(slots, np.array(new_rows, dtype=np.int64), finished)

    def reset(self) -> None:
        """Forget everything (the server restarted): every request is new again."""
        self.slot_of.clear()
        self.free_slots = list(range(self.max_slots - 1, -1, -1))
        self.num_synced[:] = 0
