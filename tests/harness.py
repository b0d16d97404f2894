"""Helpers for tests that start real servers: free ports, subprocess env, health waits.

Import as `from tests.harness import ...` (fixtures live in tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("QARR_TEST_MODEL", REPO / ".cache/models/smollm2-135m-instruct"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for servers started as subprocesses: this checkout's code first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "protos")])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache/vllm"))
    env.update(extra)
    return env


def wait_serving(address: str, proc: subprocess.Popen | None = None, timeout: float = 240.0, service: str = "") -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server process exited with {proc.returncode} before SERVING")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"{address} not SERVING after {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_tier_process(name: str, *args: str, port: int | None = None, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`python -m tier_server` on a free port; returns (process, address) once it is listening."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "tier_server", "--name", name, "--port", str(port), *args],
        env=subprocess_env(),
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc, f"127.0.0.1:{port}"
