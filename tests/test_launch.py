"""mesh.launch (what `make up` runs): starts tiers then the router, and always stops what it started."""

import signal
import socket
import subprocess
import sys
import time

import yaml

from clients import Client
from tests.harness import REPO, free_port, subprocess_env, wait_serving


def mesh_file(tmp_path, ports: list[int], router_port: int):
    tiers = [
        {"name": f"t{i}", "address": f"127.0.0.1:{p}", "model": "fake", "quantization": "bf16", "serve": {"engine": "fake"}}
        for i, p in enumerate(ports)
    ]
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{router_port}", "tiers": tiers}))
    return path


def children_alive(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_launch_brings_up_a_mesh_that_answers_and_sigterm_stops_every_process(tmp_path):
    """The launcher starts two tiers and the router, the router answers, and SIGTERM leaves no process behind."""
    router_port = free_port()
    path = mesh_file(tmp_path, [free_port(), free_port()], router_port)
    proc = subprocess.Popen([sys.executable, "-m", "mesh.launch", "--config", str(path)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_serving(f"127.0.0.1:{router_port}", proc, timeout=60)
        output = []
        while not any("QARR mesh is up" in line for line in output):  # the launcher's own banner, as a user sees it
            line = proc.stdout.readline()
            assert line, "launcher ended before saying the mesh is up:\n" + "".join(output)
            output.append(line)
        with Client(f"127.0.0.1:{router_port}", timeout=10) as client:
            for _ in range(200):  # the router learns tier health through Watch (slow on a loaded machine)
                if all(t.health == "SERVING" for t in client.tiers()):
                    break
                time.sleep(0.1)
            done = client.complete("hello there", max_tokens=3)
        assert done.usage.completion_tokens == 3 and done.tier in {"t0", "t1"}
        children = children_alive(proc.pid)
        assert len(children) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.stdout.read()
        assert not [c for c in children if subprocess.run(["kill", "-0", str(c)], capture_output=True).returncode == 0]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_tier_that_cannot_start_stops_the_tiers_already_started(tmp_path):
    """When one tier fails to bind its port, the launcher exits non-zero and the other tier is stopped too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path = mesh_file(tmp_path, [free_port(), taken.getsockname()[1]], free_port())
        proc = subprocess.Popen([sys.executable, "-m", "mesh.launch", "--config", str(path)], cwd=REPO, env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = []
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            started = children_alive(proc.pid) or started
            time.sleep(0.05)
        assert proc.wait(timeout=60) != 0
    assert started, "the launcher never started a tier"
    assert not [c for c in started if subprocess.run(["kill", "-0", str(c)], capture_output=True).returncode == 0]
