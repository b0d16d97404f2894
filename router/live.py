"""Live latency estimates per replica, from the streams the router relays.

Two figures per stream, taken without per-chunk work: the time to the tier's first message
(TTFT as the router sees it) and, from the last message, the time per output token after the
first (time after the first message / tokens after the first). Each moves an exponentially
weighted moving average (EWMA) by `alpha`; an estimate counts once `min_samples` streams fed
it. Time per token rather than tokens per second is averaged, so a slowdown shows as fast as
a speed-up (an average of rates is dominated by the fast samples).

An estimate ages: `freshness(now)` halves every `stale_half_life_s` without a new stream, so
a replica that lost its traffic to a bad estimate is tried again once the estimate has faded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LiveStats:
    alpha: float = 0.2
    min_samples: int = 3
    stale_half_life_s: float = 30.0
    ttft_ms: float = 0.0
    tpot_ms: float = 0.0  # time per output token after the first
    ttft_samples: int = 0
    decode_samples: int = 0
    updated_at: float = 0.0  # clock time of the last stream

    def configure(self, alpha: float, min_samples: int, stale_half_life_s: float) -> None:
        self.alpha, self.min_samples, self.stale_half_life_s = alpha, min_samples, stale_half_life_s

    def record(self, now: float, ttft_s: float, tokens_after_first: int = 0, decode_s: float = 0.0) -> None:
        """One stream: its first message came `ttft_s` after the attempt began; `tokens_after_first`
        more tokens came in the `decode_s` seconds after it (0: too short to tell a rate)."""
        self.ttft_ms = self._ewma(self.ttft_ms, ttft_s * 1000, self.ttft_samples)
        self.ttft_samples += 1
        if tokens_after_first > 0 and decode_s > 0:
            self.tpot_ms = self._ewma(self.tpot_ms, decode_s * 1000 / tokens_after_first, self.decode_samples)
            self.decode_samples += 1
        self.updated_at = now

    def _ewma(self, old: float, sample: float, n: int) -> float:
        return sample if n == 0 else old + self.alpha * (sample - old)

    @property
    def ttft_estimate_ms(self) -> float | None:
        return self.ttft_ms if self.ttft_samples >= self.min_samples else None

    @property
    def tpot_estimate_ms(self) -> float | None:
        return self.tpot_ms if self.decode_samples >= self.min_samples and self.tpot_ms > 0 else None

    @property
    def decode_estimate_tps(self) -> float | None:
        tpot = self.tpot_estimate_ms
        return 1000 / tpot if tpot else None

    def freshness(self, now: float) -> float:
        """1 just after a stream, halving every stale_half_life_s since."""
        return 0.5 ** (max(0.0, now - self.updated_at) / self.stale_half_life_s)
