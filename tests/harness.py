"""Helpers for tests that start real servers: free ports, subprocess env, health waits.

Import as `from tests.harness import ...` (fixtures live in tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from mesh.processes import REPO, free_port, local_env as subprocess_env, wait_serving

__all__ = ["MODEL_DIR", "REPO", "free_port", "start_tier_process", "stop_process", "subprocess_env", "wait_serving"]

MODEL_DIR = Path(os.environ.get("QARR_TEST_MODEL", REPO / ".cache/models/smollm2-135m-instruct"))


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
