"""Running mesh servers as local processes: free ports, their environment, waiting for SERVING.

Used by the launcher (`make up`), the benchmarks and the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


class ServerExited(RuntimeError):
    """The server process ended before it said SERVING."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_env(**extra: str) -> dict[str, str]:
    """Environment for servers started from this checkout: its code first, offline, no CPU pinning,
    vLLM caches inside the project (see ENGINE_NOTES.md)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "protos"), os.environ.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache/vllm"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache/inductor"))
    env.update(extra)
    return env


def wait_serving(
    address: str, proc: subprocess.Popen | None = None, timeout: float = 60.0, service: str = "", poll_s: float = 0.25
) -> None:
    """Poll grpc.health.v1 Check until SERVING; ServerExited if `proc` ends first, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ServerExited(f"server at {address} exited with code {proc.returncode} before SERVING")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(poll_s)
    raise TimeoutError(f"{address} not SERVING after {timeout:.0f} s")
