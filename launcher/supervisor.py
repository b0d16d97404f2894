"""Keep a mesh's servers running: a server that exits is started again after a backoff.

One thread, one loop, every tick: a server that ended (crash, kill -9) has its
process group killed (launcher/process.py) and is started again after its
backoff (1 s, doubling up to 30 s; back to 1 s once it stayed up a minute);
a restarted server is announced when it says SERVING again. The others keep
running meanwhile; the router routes around the missing tier by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from launcher.process import ServerExited, ServerProcess, describe_exit


@dataclass
class Backoff:
    """Delay before the next restart: `initial_s`, doubling up to `max_s`; a server that stayed up
    `stable_s` starts again from `initial_s`."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    _next_s: float | None = field(default=None, repr=False)

    def after_exit(self, up_s: float) -> float:
        if self._next_s is None or up_s >= self.stable_s:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay


STARTING, SERVING, WAITING = "starting", "serving", "waiting to restart"


@dataclass
class Supervised:
    server: ServerProcess
    backoff: Backoff
    state: str = SERVING
    restart_at: float = 0.0
    exited_at: float = 0.0
    restarts: int = 0


class Supervisor:
    """Starts servers, waits for them, and restarts any that exits until `stop_requested()` says stop."""

    def __init__(
        self,
        stop_requested: Callable[[], bool],
        say: Callable[[str], None] = print,
        backoff: Callable[[], Backoff] = Backoff,
        start_timeout_s: float = 300.0,
        tick_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop_requested = stop_requested
        self.say = say
        self.new_backoff = backoff
        self.start_timeout_s = start_timeout_s
        self.tick_s = tick_s
        self.clock = clock
        self.watched: list[Supervised] = []

    def start(self, servers: Sequence[ServerProcess]) -> bool:
        """Start servers together and wait until each says SERVING (False if a stop was requested first).
        A server that exits or does not get there in start_timeout_s raises: the mesh did not start."""
        t0 = self.clock()
        for s in servers:
            s.start()
        pending = list(servers)
        while pending:
            for s in list(pending):
                if (code := s.exit_code()) is not None:
                    raise ServerExited(f"{s.name} exited with {describe_exit(code)} while starting")
                if s.is_serving(timeout=0.5):
                    self.say(f"{s.name} SERVING after {self.clock() - t0:.0f} s")
                    pending.remove(s)
            if pending and self.clock() - t0 > self.start_timeout_s:
                raise TimeoutError(f"{', '.join(s.name for s in pending)} not SERVING after {self.start_timeout_s:.0f} s")
            if pending and self._sleep():
                return False
        self.watched += [Supervised(s, self.new_backoff()) for s in servers]
        return True

    def run(self) -> None:
        """Supervise every started server until a stop is requested."""
        while not self._sleep():
            for w in self.watched:
                self.step(w)

    def step(self, w: Supervised) -> None:
        """One look at one server: restart it when its backoff is over, notice that it ended or came up."""
        now = self.clock()
        s = w.server
        if w.state == WAITING:
            if now >= w.restart_at:
                w.restarts += 1
                s.start()
                w.state = STARTING
            return
        code = s.exit_code()
        if code is not None:
            up_s = now - s.started_at
            delay = w.backoff.after_exit(up_s)
            how = "while starting" if w.state == STARTING else f"after {up_s:.0f} s up"
            self.say(f"{s.name} exited ({describe_exit(code)}) {how}; restarting in {delay:g} s")
            w.state, w.restart_at, w.exited_at = WAITING, now + delay, now
            return
        if w.state == STARTING:
            if s.is_serving(timeout=0.5):
                w.state = SERVING
                self.say(f"{s.name} SERVING again {self.clock() - w.exited_at:.1f} s after it exited (restart {w.restarts})")
            elif now - s.started_at > self.start_timeout_s:
                self.say(f"{s.name} not SERVING {self.start_timeout_s:.0f} s after its restart; stopping it")
                s.stop()

    def _sleep(self) -> bool:
        """Wait one tick; True when a stop was requested."""
        if self.stop_requested():
            return True
        time.sleep(self.tick_s)
        return self.stop_requested()
