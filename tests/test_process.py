"""launcher/process.py, the one owner of local server processes: own session, group kill, parent death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launcher.process import REPO, ServerExited, ServerProcess, free_port, local_env, stop_all
from tests.process_tree import alive, descendants, in_groups, wait_until_none

# A stand-in server: starts a child that lives on (as vLLM's EngineCore would), says its pid, then waits.
WITH_CHILD = textwrap.dedent("""
    import signal, subprocess, sys, time
    if sys.argv[1:] == ["ignore-term"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
""")


def start_with_child(tmp_path, *args: str) -> tuple[ServerProcess, int]:
    log = tmp_path / "server.log"
    tmp_path.mkdir(parents=True, exist_ok=True)
    server = ServerProcess("stand-in", [sys.executable, "-c", WITH_CHILD, *args], log=log).start()
    wait_until_none(lambda: [] if log.read_text().strip() else [server], timeout=30)
    return server, int(log.read_text().split()[0])


def test_server_runs_in_its_own_session_so_a_terminal_ctrl_c_does_not_reach_it(tmp_path):
    """The server leads its own session and process group, apart from the process that started it."""
    server, child = start_with_child(tmp_path)
    try:
        assert os.getsid(server.pid) == server.pid == os.getpgid(server.pid) != os.getpgid(0)
        assert os.getpgid(child) == server.pid  # its children stay in its group
    finally:
        server.stop(timeout=5)


def test_a_server_killed_with_9_leaves_no_child_behind(tmp_path):
    """kill -9 of the server: the next look at it kills what is left of its group (the orphaned child)."""
    server, child = start_with_child(tmp_path)
    os.kill(server.pid, signal.SIGKILL)
    assert server.wait_exit(timeout=10) == -signal.SIGKILL
    left, waited = wait_until_none(lambda: alive([child]), timeout=5)
    assert not left and not in_groups([server.pid])
    print(f"\nchild of a killed server gone {waited * 1000:.0f} ms after its leader was reaped")


def test_stop_kills_the_whole_group_when_the_server_ignores_sigterm(tmp_path):
    """stop(timeout) sends SIGTERM, waits, then SIGKILLs the group: leader and child are gone."""
    server, child = start_with_child(tmp_path, "ignore-term")
    assert server.stop(timeout=0.5) == -signal.SIGKILL
    assert not wait_until_none(lambda: alive([server.pid, child]), timeout=5)[0]


def test_a_clean_exit_still_kills_the_rest_of_the_group(tmp_path):
    """SIGTERM ends the leader (default action) while its child would live on: the child is killed too."""
    server, child = start_with_child(tmp_path)
    assert server.stop(timeout=10) == -signal.SIGTERM
    assert not wait_until_none(lambda: alive([child]), timeout=5)[0]


def test_a_server_dies_with_the_process_that_started_it(tmp_path):
    """PR_SET_PDEATHSIG: when the starting process is killed with -9, its server gets SIGTERM and ends."""
    starter = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from launcher.process import ServerProcess
            s = ServerProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]).start()
            print(s.pid, flush=True)
            time.sleep(600)
        """)],
        env=local_env(), stdout=subprocess.PIPE, text=True,
    )
    server = int(starter.stdout.readline())
    assert alive([server])
    starter.kill()
    starter.wait()
    left, waited = wait_until_none(lambda: alive([server]), timeout=10)
    assert not left
    print(f"\nserver gone {waited * 1000:.0f} ms after its starter was killed")


def test_wait_serving_fails_fast_when_the_server_exits_first(tmp_path):
    """A server that exits before SERVING raises ServerExited with its exit code and log at once."""
    server = ServerProcess("doomed", [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"],
                           f"127.0.0.1:{free_port()}", log=tmp_path / "doomed.log").start()
    with pytest.raises(ServerExited, match="(?s)code 3.*no model here"):
        server.wait_serving(timeout=60)


def test_wait_serving_stops_a_server_that_does_not_come_up_in_time(tmp_path):
    """TimeoutError after the timeout, and the server is stopped rather than left running."""
    server = ServerProcess("silent", [sys.executable, "-c", "import time; time.sleep(600)"], f"127.0.0.1:{free_port()}",
                           stop_timeout_s=5).start()
    with pytest.raises(TimeoutError):
        server.wait_serving(timeout=0.5)
    assert server.exit_code() is not None and not alive([server.pid])


def test_local_env_marks_servers_with_the_process_that_started_the_mesh():
    """Servers inherit QARR_STARTED_BY; one set higher up (a launcher under pytest) is kept."""
    env = local_env()
    assert env["QARR_STARTED_BY"] == os.environ["QARR_STARTED_BY"]
    assert local_env(QARR_STARTED_BY="1")["QARR_STARTED_BY"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)


def test_descendants_walks_the_process_tree(tmp_path):
    """The test helper finds a server's child below it (used to record every process of a mesh)."""
    server, child = start_with_child(tmp_path)
    try:
        assert child in {p.pid for p in descendants(server.pid)}
    finally:
        server.stop(timeout=5)


def test_stop_all_drains_together_and_kills_each_late_server_at_its_own_deadline(tmp_path):
    """stop_all: SIGTERM to all at once; servers ignoring it are killed (children too) at the timeout,
    not one after the other; each end is reported."""
    servers = [start_with_child(tmp_path / str(i), "ignore-term") for i in range(3)]
    said: list[str] = []
    t0 = time.monotonic()
    stop_all([s for s, _ in servers], timeout=1.0, say=said.append)
    took = time.monotonic() - t0
    assert 1.0 <= took < 2.5, took
    assert len(said) == 3 and all("killed (SIGKILL)" in line for line in said), said
    assert not wait_until_none(lambda: alive([p for s, child in servers for p in (s.pid, child)]), timeout=5)[0]
