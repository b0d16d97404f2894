"""What runs on this machine, read from /proc: for tests that prove no server process is left behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from launcher.process import OWNER_ENV

# Command lines of mesh servers (`python -m ...`) and the process names vLLM gives its engine processes.
SERVER_MODULES = ("tier_server", "router", "launcher", "bench.relay_plain")
ENGINE_PREFIX = "VLLM::"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    name: str
    cmdline: str

    @property
    def is_engine(self) -> bool:
        """VLLM::EngineCore or VLLM::Worker (the kernel's name is cut at 15 characters; the command line is not)."""
        return self.cmdline.startswith(ENGINE_PREFIX)

    @property
    def is_mesh_server(self) -> bool:
        args = self.cmdline.split()
        return self.is_engine or any(
            args[i] == "-m" and args[i + 1] in SERVER_MODULES for i in range(len(args) - 1)
        )

    def __str__(self) -> str:
        return f"pid {self.pid} (ppid {self.ppid}, pgid {self.pgid}, {self.state}) {self.cmdline[:120]}"


def _read(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return Proc(pid, int(fields[1]), int(fields[2]), fields[0], name, cmdline or f"[{name}]")


def processes() -> list[Proc]:
    """Every process that is running (zombies, which hold nothing but their pid, are left out)."""
    procs = (_read(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [p for p in procs if p is not None and p.state != "Z"]


def descendants(pid: int) -> list[Proc]:
    """The processes below `pid` in the process tree, children first."""
    procs = processes()
    found, frontier = [], {pid}
    while frontier:
        level = [p for p in procs if p.ppid in frontier]
        found += level
        frontier = {p.pid for p in level}
    return found


def in_groups(pgids: Iterable[int]) -> list[Proc]:
    pgids = set(pgids)
    return [p for p in processes() if p.pgid in pgids]


def alive(pids: Iterable[int]) -> list[Proc]:
    pids = set(pids)
    return [p for p in processes() if p.pid in pids]


def started_by(owner: int) -> list[Proc]:
    """Mesh servers and engine processes whose environment says `owner` started them (launcher/process.py
    marks every server it starts; the marker survives re-parenting to init)."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for p in processes():
        if p.pid == owner or not p.is_mesh_server:
            continue
        try:
            env = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if marker in env:
            found.append(p)
    return found


def wait_until_none(find: Callable[[], list[Proc]], timeout: float, poll_s: float = 0.05) -> tuple[list[Proc], float]:
    """Poll `find` until it returns nothing or `timeout` passes; (what is still there, seconds waited)."""
    t0 = time.monotonic()
    while (left := find()) and time.monotonic() - t0 < timeout:
        time.sleep(poll_s)
    return left, time.monotonic() - t0
