"""Cost per million generated tokens from a hardware price per hour and a measured throughput."""

from __future__ import annotations


def cost_per_million_tokens(price_per_hour: float, tokens_per_second: float) -> float:
    """$ per 1M tokens when the hardware (price_per_hour $) generates `tokens_per_second` flat out.

    The profiler passes the throughput at concurrency N: a tier that is kept busy
    is billed per hour, not per request.
    """
    if price_per_hour < 0:
        raise ValueError("price per hour must be >= 0")
    if tokens_per_second <= 0:
        return 0.0 if price_per_hour == 0 else float("inf")
    return price_per_hour / (tokens_per_second * 3600) * 1_000_000
