"""launcher/supervisor.py: a server that exits is started again after a backoff that grows, and says so."""

from __future__ import annotations

import re
import sys
import time

from launcher.process import ServerProcess, free_port
from launcher.supervisor import SERVING, WAITING, Backoff, Supervised, Supervisor


def test_restart_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run():
    """1, 2, 4 ... capped; a server that stayed up stable_s restarts after the initial delay again."""
    b = Backoff(initial_s=1, max_s=8, stable_s=60)
    assert [b.after_exit(up_s=2) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert b.after_exit(up_s=61) == 1
    assert b.after_exit(up_s=3) == 2


def test_a_server_that_keeps_exiting_is_restarted_with_growing_delays_and_each_exit_is_said():
    """Each exit is announced with its code and the next delay; restarts follow the backoff; nothing is left running."""
    said: list[str] = []
    server = ServerProcess("tier crashy", [sys.executable, "-c", "raise SystemExit(3)"], f"127.0.0.1:{free_port()}").start()
    supervisor = Supervisor(lambda: False, said.append)
    watched = Supervised(server, Backoff(initial_s=0.05, max_s=0.2, stable_s=60))
    deadline = time.monotonic() + 60
    while len(said) < 4 and time.monotonic() < deadline:
        supervisor.step(watched)
        time.sleep(0.01)
    assert re.fullmatch(r"tier crashy exited \(code 3\) after \d+ s up; restarting in 0.05 s", said[0]), said[0]
    assert said[1:] == [f"tier crashy exited (code 3) while starting; restarting in {d:g} s" for d in (0.1, 0.2, 0.2)]
    assert watched.restarts == 3 and server.starts == 4 and watched.state == WAITING
    assert server.exit_code() == 3


def test_a_restarted_server_is_announced_when_it_says_serving_again(tmp_path):
    """After a restart the supervisor waits for grpc.health SERVING and says how long it took."""
    port = free_port()
    argv = [sys.executable, "-m", "tier_server", "--engine", "fake", "--name", "t", "--port", str(port), "--grace-seconds", "0"]
    server = ServerProcess("tier t", argv, f"127.0.0.1:{port}", log=tmp_path / "t.log").start().wait_serving(60)
    said: list[str] = []
    supervisor = Supervisor(lambda: False, said.append)
    watched = Supervised(server, Backoff(initial_s=0.01))
    try:
        server.kill()
        deadline = time.monotonic() + 60
        while not (watched.state == SERVING and watched.restarts) and time.monotonic() < deadline:
            supervisor.step(watched)
            time.sleep(0.05)
        assert re.fullmatch(r"tier t exited \(SIGKILL\) after \d+ s up; restarting in 0.01 s", said[0]), said[0]
        assert said[-1].startswith("tier t SERVING again") and said[-1].endswith("(restart 1)")
        assert server.is_serving()
    finally:
        server.stop(timeout=5)
