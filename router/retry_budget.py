"""Retry budget: each request earns `ratio` of a retry, saved up to `burst`; each retry spends one.

With every tier failing, attempts stay within (1 + ratio) x requests + burst, so
a dead mesh is not hammered with retries. No clock: it counts requests.
"""

from __future__ import annotations


class RetryBudget:
    def __init__(self, ratio: float = 0.1, burst: float = 20.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = burst

    def configure(self, ratio: float, burst: float) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = min(self.tokens, burst)

    def on_request(self) -> None:
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
