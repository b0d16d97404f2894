"""Breaker state machine with an injected clock, and the retry budget."""

from __future__ import annotations

from router.breaker import Breaker, State
from router.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw) -> Breaker:
    return Breaker(clock, **{"failure_threshold": 5, "open_base_s": 30, "open_max_s": 300, "half_open_probes": 2, **kw})


def test_opens_after_n_consecutive_failures_only():
    """Five failures in a row open it; a success in between starts the count over."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    b.record_success()
    for _ in range(4):
        b.record_failure()
    assert b.state is State.CLOSED and b.allows()
    b.record_failure()
    assert b.state is State.OPEN and not b.allows()


def test_open_then_half_open_then_closed_on_probe_success():
    """After the open time a few probes pass; one success closes it."""
    clock = Clock()
    b = breaker(clock)
    b.trip()
    clock.now += 29.9
    assert b.state is State.OPEN
    clock.now += 0.1
    assert b.state is State.HALF_OPEN
    assert b.acquire() and b.acquire()
    assert not b.acquire()  # only half_open_probes probes at once
    b.record_success()
    assert b.state is State.CLOSED and b.acquire()


def test_failed_probe_reopens_with_doubled_time_up_to_cap():
    """Each re-open doubles the open time (30, 60, 120, 240, then the 300 s cap)."""
    clock = Clock()
    b = breaker(clock)
    seen = []
    b.trip()
    for _ in range(6):
        seen.append(b.open_for_s)
        clock.now += b.open_for_s
        assert b.state is State.HALF_OPEN
        assert b.acquire()
        b.record_failure()
        assert b.state is State.OPEN
    assert seen == [30, 60, 120, 240, 300, 300]


def test_count_starts_over_after_a_quiet_spell():
    """Closed and quiet for as long as the cap, the next open lasts the base time again."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.trip()
        clock.now += b.open_for_s
        assert b.state is State.HALF_OPEN
        b.acquire()
        b.record_success() if _ == 2 else b.record_failure()
    assert b.state is State.CLOSED
    clock.now += 301
    b.trip()
    assert b.open_for_s == 30


def test_released_probe_frees_its_slot():
    """A probe that ends without a verdict (caller cancelled) gives its slot back."""
    clock = Clock()
    b = breaker(clock, half_open_probes=1)
    b.trip()
    clock.now += 30
    assert b.acquire() and not b.allows()
    b.release(probe=True)
    assert b.allows()


def test_retry_budget_caps_retries_at_ratio_of_requests():
    """With every retry wanted, retries stay within ratio x requests + burst."""
    budget = RetryBudget(ratio=0.1, burst=5)
    retries = 0
    for _ in range(1000):
        budget.on_request()
        retries += budget.try_spend()
    assert 100 <= retries <= 105
