"""The log lines saying when speculation stops and when it resumes.

Each pause and its resumption are logged (warning, info) unless a pause was already
logged within ``QUIET_S``; those repeats go to the debug log and are counted in the
next logged line, so a server that keeps missing deadlines does not flood the log.
"""
from __future__ import annotations

import logging
import time

logger = logging.getLogger("vllm_ssd.vllm_seam.proposer")
QUIET_S = 60.0


class PauseLog:
    def __init__(self):
        self.paused_since: float | None = None  # time.monotonic() of the current pause
        self.last_logged = -QUIET_S
        self.logging_this_pause = False
        self.unlogged_pauses = 0

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def pause(self, reason: str) -> None:
        if self.paused:
            return
        now = time.monotonic()
        self.paused_since = now
        self.logging_this_pause = now - self.last_logged >= QUIET_S
        if not self.logging_this_pause:
            self.unlogged_pauses += 1
            logger.debug("vllm_ssd: speculation paused: %s", reason)
            return
        self.last_logged = now
        repeats = f" ({self.unlogged_pauses} shorter pauses since the last message)" \
            if self.unlogged_pauses else ""
        self.unlogged_pauses = 0
        logger.warning("vllm_ssd: speculation paused: %s; decoding continues without drafts%s",
                       reason, repeats)

    def resume(self, how: str) -> None:
        if not self.paused:
            return
        seconds = time.monotonic() - self.paused_since
        self.paused_since = None
        log = logger.info if self.logging_this_pause else logger.debug
        log("vllm_ssd: speculation resumes after %.1f s: %s", seconds, how)
