"""Tiers to profile: read from a mesh file, started as tier servers by the profiler or already running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import MeshConfigError, TierSpec, load_mesh
from mesh.launch import tier_command

REPO = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the profiler dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def read_mesh(path: str | Path, only: list[str] | None = None) -> list[TierSpec]:
    try:
        specs = load_mesh(path).tiers
    except MeshConfigError as e:
        raise SystemExit(str(e)) from None
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise SystemExit(f"{path}: no tier named {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in only]
    return specs


def tier_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "protos"), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    env.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache/vllm"))
    return env


def is_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


class StartedTier:
    """A tier server process the profiler started; logs go to `log`. Use as a context manager."""

    def __init__(self, spec: TierSpec, log: Path, timeout_s: float = 300.0) -> None:
        self.spec, self.log, self.timeout_s = spec, log, timeout_s
        self.proc: subprocess.Popen | None = None
        self.start_s = 0.0

    def __enter__(self) -> "StartedTier":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(tier_command(self.spec), env=tier_env(), cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            while time.monotonic() - t0 < self.timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tier {self.spec.name} exited with {self.proc.returncode} while starting; "
                                       f"log {self.log}:\n{self.log.read_text(errors='replace')[-3000:]}")
                if is_serving(self.spec.address):
                    self.start_s = time.monotonic() - t0
                    return self
                time.sleep(0.5)
            raise TimeoutError(f"tier {self.spec.name} not SERVING after {self.timeout_s:.0f} s; log {self.log}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
