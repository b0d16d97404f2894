"""A circuit breaker per tier, with an injected clock.

CLOSED --N consecutive failures, or health NOT_SERVING--> OPEN
OPEN   --open time elapsed, or health SERVING again--> HALF_OPEN (a few probe calls may pass)
HALF_OPEN --a probe succeeds--> CLOSED;  --a probe fails, or NOT_SERVING--> OPEN again

Each re-open doubles the open time (base, 2*base, 4*base ... up to a cap).
After a quiet CLOSED spell as long as the cap, the count starts over.
The breaker only counts what it is told: the caller decides which outcomes
are the tier's fault (client errors are not).
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    def __init__(
        self,
        clock: Callable[[], float],
        failure_threshold: int = 5,
        open_base_s: float = 30.0,
        open_max_s: float = 300.0,
        half_open_probes: int = 3,
    ) -> None:
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.open_base_s = open_base_s
        self.open_max_s = open_max_s
        self.half_open_probes = half_open_probes
        self._state = State.CLOSED
        self._failures = 0
        self._opens = 0
        self._opened_at = 0.0
        self._closed_at = clock()
        self._probes = 0

    def configure(self, failure_threshold: int, open_base_s: float, open_max_s: float, half_open_probes: int) -> None:
        """New settings (config reload); the current state stays."""
        self.failure_threshold = failure_threshold
        self.open_base_s = open_base_s
        self.open_max_s = open_max_s
        self.half_open_probes = half_open_probes

    @property
    def open_for_s(self) -> float:
        return min(self.open_base_s * 2 ** max(self._opens - 1, 0), self.open_max_s)

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.clock() - self._opened_at >= self.open_for_s:
            self._state = State.HALF_OPEN
            self._probes = 0
        return self._state

    def allows(self) -> bool:
        """Whether a new call may go to the tier now (does not take a probe slot)."""
        state = self.state
        return state is State.CLOSED or (state is State.HALF_OPEN and self._probes < self.half_open_probes)

    def acquire(self) -> bool:
        """Take the right to send one call; False when the breaker refuses it. Pair with a record_* or release."""
        if not self.allows():
            return False
        if self._state is State.HALF_OPEN:
            self._probes += 1
        return True

    def release(self, probe: bool) -> None:
        """The call ended without a verdict on the tier (e.g. the caller cancelled)."""
        if probe and self._state is State.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def record_success(self) -> None:
        self._failures = 0
        if self._state is State.HALF_OPEN:
            self._state = State.CLOSED
            self._closed_at = self.clock()

    def record_failure(self) -> None:
        if self._state is State.HALF_OPEN:
            self.trip()
            return
        self._failures += 1
        if self._state is State.CLOSED and self._failures >= self.failure_threshold:
            self.trip()

    def probe_now(self) -> None:
        """OPEN -> HALF_OPEN at once (the tier's health says it is back); other states stay."""
        if self._state is State.OPEN:
            self._state = State.HALF_OPEN
            self._probes = 0

    def trip(self) -> None:
        """Open now (consecutive failures, a failed probe, or a NOT_SERVING health status)."""
        if self._state is State.OPEN:
            return
        now = self.clock()
        if self._state is State.CLOSED and now - self._closed_at >= self.open_max_s:
            self._opens = 0
        self._opens += 1
        self._state = State.OPEN
        self._opened_at = now
        self._failures = 0
        self._probes = 0
