"""When the proposer may start a replacement draft server: at once after the first
failure, then with growing back-off while start-ups keep failing."""
from __future__ import annotations

RESTART_BACKOFF_S = (0.0, 1.0, 5.0, 30.0)  # wait before attempt n after n failures in a row


class RestartSchedule:
    def __init__(self, backoff_s: tuple[float, ...] = RESTART_BACKOFF_S):
        self.backoff_s = backoff_s
        self.failures = 0  # in a row, since the last server that answered a step
        self.next_attempt = 0.0  # time.monotonic() before which no start is tried

    def failed(self, now: float) -> float:
        """Records a failure (death, silence, failed start-up); returns the back-off."""
        self.failures += 1
        delay = self.backoff_s[min(self.failures - 1, len(self.backoff_s) - 1)]
        self.next_attempt = now + delay
        return delay

    def due(self, now: float) -> bool:
        return now >= self.next_attempt

    def succeeded(self) -> None:
        self.failures = 0
