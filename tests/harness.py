"""Helpers for tests that start real servers (the process owner is launcher/process.py).

Import as `from tests.harness import ...` (fixtures live in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from launcher.process import REPO, ServerProcess, free_port, local_env as subprocess_env

__all__ = ["MODEL_DIR", "REPO", "ServerProcess", "free_port", "start_router_process", "start_tier_process", "subprocess_env"]

MODEL_DIR = Path(os.environ.get("QARR_TEST_MODEL", REPO / ".cache/models/smollm2-135m-instruct"))


def start_tier_process(name: str, *args: str, port: int | None = None, log: Path | None = None) -> ServerProcess:
    """`python -m tier_server --name NAME ARGS` on a free port, started (wait with `.wait_serving()`)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "tier_server", "--name", name, "--port", str(port), *args]
    return ServerProcess(f"tier {name}", argv, f"127.0.0.1:{port}", log=log).start()


def start_router_process(config: Path, *args: str, listen: str, log: Path | None = None) -> ServerProcess:
    """`python -m router --config FILE --listen ADDRESS ARGS`, started (wait with `.wait_serving()`)."""
    argv = [sys.executable, "-m", "router", "--config", str(config), "--listen", listen, *args]
    return ServerProcess("router", argv, listen, log=log).start()


async def wait_for(check: Callable[[], Awaitable[bool] | bool], timeout: float, what: str | Callable[[], str],
                   poll_s: float = 0.01) -> float:
    """Poll until check() is true; the monotonic time it was first seen true. `what` (or what it returns) names
    the awaited state in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what() if callable(what) else what}")
        await asyncio.sleep(poll_s)
