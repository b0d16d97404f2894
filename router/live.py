"""Live latency estimates per replica, from the streams the router relays.

Two figures per stream, taken without per-chunk work: the time to the tier's first message
(TTFT as the router sees it) and, from the last message, the decode rate (tokens after the
first / time after the first message). Each moves an exponentially weighted moving average
(EWMA) by `alpha`; an estimate counts once `min_samples` streams fed it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LiveStats:
    alpha: float = 0.2
    min_samples: int = 3
    ttft_ms: float = 0.0
    decode_tps: float = 0.0
    ttft_samples: int = 0
    decode_samples: int = 0

    def configure(self, alpha: float, min_samples: int) -> None:
        self.alpha, self.min_samples = alpha, min_samples

    def record(self, ttft_s: float, tokens_after_first: int = 0, decode_s: float = 0.0) -> None:
        """One stream: its first message came `ttft_s` after the attempt began; `tokens_after_first`
        more tokens came in the `decode_s` seconds after it (0: too short to tell a rate)."""
        self.ttft_ms = self._ewma(self.ttft_ms, ttft_s * 1000, self.ttft_samples)
        self.ttft_samples += 1
        if tokens_after_first > 0 and decode_s > 0:
            self.decode_tps = self._ewma(self.decode_tps, tokens_after_first / decode_s, self.decode_samples)
            self.decode_samples += 1

    def _ewma(self, old: float, sample: float, n: int) -> float:
        return sample if n == 0 else old + self.alpha * (sample - old)

    @property
    def ttft_estimate_ms(self) -> float | None:
        return self.ttft_ms if self.ttft_samples >= self.min_samples else None

    @property
    def decode_estimate_tps(self) -> float | None:
        return self.decode_tps if self.decode_samples >= self.min_samples else None
