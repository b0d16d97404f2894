"""Peak memory of a tier: RSS of its whole process tree (server, engine core, workers) and GPU memory."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

PAGE = 4096


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of `pid` and all its descendants (shared pages counted once per process)."""
    return sum(rss_bytes(p) for p in process_tree(pid))


def gpu_memory_bytes(pids: list[int]) -> int:
    """GPU memory used by `pids` per nvidia-smi; 0 without an NVIDIA GPU."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    wanted, total = set(pids), 0
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and int(pid) in wanted:
            total += int(float(mib)) * 1024 * 1024
    return total


def pid_listening_on(port: int) -> int | None:
    """The process listening on a local TCP port (for tiers the profiler did not start)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, OSError):
        return None
    return None


class PeakMemorySampler:
    """Samples a process tree's RSS (and GPU memory) in a thread; `.peak_bytes` is the largest seen."""

    def __init__(self, pid: int | None, interval_s: float = 0.25) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_rss = self.peak_gpu = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._gpu = shutil.which("nvidia-smi") is not None

    @property
    def peak_bytes(self) -> int:
        return self.peak_rss + self.peak_gpu

    def sample(self) -> None:
        if self.pid is None:
            return
        pids = process_tree(self.pid)
        self.peak_rss = max(self.peak_rss, sum(rss_bytes(p) for p in pids))
        if self._gpu:
            self.peak_gpu = max(self.peak_gpu, gpu_memory_bytes(pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakMemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
