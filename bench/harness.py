"""Shared pieces of every benchmark: servers as subprocesses, the load generator
process, CPU and memory readings from /proc, statistics, tables, JSON and plots.

Everything measured here runs in its own process (tier, router, plain relay,
load generator), so one process's CPU time is that process's cost alone.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from launcher.process import REPO, ServerProcess, free_port, local_env as subprocess_env, stop_all as stop_servers
from mesh.config import MeshConfig, TierSpec
from profiler.stats import percentile

ROUTER_METHOD = "/qarr.v1.RouterService/Generate"
TIER_METHOD = "/qarr.v1.TierService/Generate"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- processes

class Server(ServerProcess):
    """One measured server (tier, router or plain relay) on a free loopback port, started at once
    (launcher/process.py owns it); wait with `.wait_serving()`."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path | None = None, repo: Path = REPO) -> None:
        env = None if repo == REPO else {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "protos")])}
        super().__init__(name, argv, f"127.0.0.1:{port}", log=log, env=env, cwd=repo, stop_timeout_s=15.0)
        self.port = port
        self.start()

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)


def start_fake_tier(out: Path, name: str = "fake", token_delay_ms: float = 0.0) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "tier_server", "--engine", "fake", "--name", name, "--port", str(port),
            "--fake-token-delay-ms", str(token_delay_ms), "--grace-seconds", "1", "--log-level", "WARNING"]
    return Server(f"tier {name}", argv, port, out / f"tier-{name}.log")


def write_router_config(path: Path, tiers: Sequence[TierSpec | dict], **settings) -> Path:
    """A mesh file for the router alone (tiers already running), validated like any mesh file;
    `settings` (profiles, policy, upstream_tls for tiers that serve TLS, ...) are router settings as in
    mesh.yaml. The router itself listens in plaintext on loopback: the benchmarks measure routing, not TLS."""
    import yaml

    # Admission limits above the largest load a benchmark offers (1,000 open streams), so the
    # benchmarks measure the relay rather than the router's deliberate RESOURCE_EXHAUSTED.
    limit = {"max_in_flight": 4096}
    specs = [(t if isinstance(t, TierSpec) else TierSpec.model_validate(t)).model_copy(update=limit) for t in tiers]
    config = MeshConfig.model_validate({"grace_seconds": 1, **limit, **settings, "tiers": specs})
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return path


def start_router(
    out: Path, tiers: Sequence[TierSpec | dict], log_level: str = "INFO", tag: str = "router", repo: Path = REPO,
    **settings,
) -> Server:
    """The real router (`python -m router`), logging at its production level into a file.
    `repo`: another checkout whose router to run (see `checkout`), for before/after comparisons;
    `settings`: router settings for its mesh file (profiles, policy, ...)."""
    port = free_port()
    config = write_router_config(out / f"{tag}.yaml", tiers, **settings)
    argv = [sys.executable, "-m", "router", "--config", str(config.resolve()), "--listen", f"127.0.0.1:{port}", "--log-level", log_level]
    return Server(tag, argv, port, out / f"{tag}.log", repo=repo)


def checkout(ref: str, where: Path) -> Path:
    """The source tree of git `ref` (e.g. main~5) at `where`, extracted with `git archive` (no worktree to clean up)."""
    import shutil
    import tarfile

    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=REPO, capture_output=True, check=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def start_plain_relay(out: Path, upstream: str, tag: str = "relay") -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.relay_plain", "--listen", f"127.0.0.1:{port}", "--upstream", upstream]
    return Server("plain relay", argv, port, out / f"{tag}.log")


# ---------------------------------------------------------------- /proc readings

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "0")
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:
        grpc_version = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1),
        "python": platform.python_version(), "grpc": grpc_version, "commit": commit,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
    }


# ---------------------------------------------------------------- load generator process

class LoadGen:
    """The load generator (bench/loadgen.py) in its own process, driven by JSON lines."""

    def __init__(self, out: Path | None = None) -> None:
        err = open(out / "loadgen.log", "ab") if out else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"], env=subprocess_env(), cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, cmd: dict, timeout: float = 300.0, on_event: Callable[[dict], None] | None = None) -> dict:
        """Send one command; events (e.g. 'open') go to on_event; returns the result."""
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"load generator gave no result in {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"load generator exited ({self.proc.poll()})")
            msg = json.loads(line)
            if msg.get("event"):
                if on_event:
                    on_event(msg)
                continue
            if msg.get("error"):
                raise RuntimeError(f"load generator: {msg['error']}")
            return msg

    def closed(self, target: str, method: str, *, concurrency: int, requests: int, max_tokens: int,
               prompt: str = "Say something.", timeout: float = 300.0, report_open: bool = False,
               ramp_s: float = 0.0, on_event=None, channels: int = 1) -> dict:
        """Closed loop: `concurrency` workers send `requests` in all, one stream at a time each, over
        `channels` connections."""
        cmd = {"cmd": "closed", "target": target, "method": method, "concurrency": concurrency, "requests": requests,
               "max_tokens": max_tokens, "prompt": prompt, "deadline_s": timeout, "report_open": report_open,
               "ramp_s": ramp_s, "channels": channels}
        return self.call(cmd, timeout=timeout + 30, on_event=on_event)

    def open_loop(self, target: str, items: list[dict], timeout: float = 600.0) -> dict:
        """Open loop: each item {at_s, messages|prompt, max_tokens, tier, latency_budget_ms, min_accuracy}."""
        return self.call({"cmd": "open", "target": target, "method": ROUTER_METHOD, "items": items,
                          "deadline_s": timeout}, timeout=timeout + 30)

    def until_ok(self, target: str, method: str, timeout: float = 30.0) -> None:
        """Repeat one short call until it succeeds (the router routes only once it has heard a tier is SERVING)."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.closed(target, method, concurrency=1, requests=1, max_tokens=1, timeout=10)
            if res["completed"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} still failing after {timeout:.0f} s: {res['errors']}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- statistics

def summary_ms(values_s: Sequence[float]) -> dict:
    return {"n": len(values_s), "p50": percentile(values_s, 50) * 1e3, "p95": percentile(values_s, 95) * 1e3, "p99": percentile(values_s, 99) * 1e3}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares y = a + b x; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def rotated(arms: Sequence[str], round_no: int) -> list[str]:
    """Round r runs the arms starting at r: every arm goes first, middle and last, so drift cancels."""
    k = round_no % len(arms)
    return list(arms[k:]) + list(arms[:k])


# ---------------------------------------------------------------- output

def fmt(v, digits: int = 2) -> str:
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Iterable[Sequence], digits: int = 2) -> str:
    """A markdown table (prints well and pastes into RESULTS.md)."""
    rows = [[fmt(c, digits) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ("-" if not i else ":") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


class Output:
    """Where one benchmark writes: result.json, plots, profiles; prints tables as it goes."""

    def __init__(self, name: str, out: str | None) -> None:
        self.name = name
        self.dir = Path(out) if out else REPO / "results" / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.result: dict = {"benchmark": name, "machine": machine(), "loadavg_start": loadavg(), "tables": {}}

    def print_table(self, key: str, title: str, headers, rows, digits: int = 2) -> str:
        text = table(headers, rows, digits)
        self.result["tables"][key] = {"title": title, "markdown": text}
        print(f"\n### {title}\n\n{text}\n", flush=True)
        return text

    def plot(self, filename: str, draw: Callable) -> str | None:
        """draw(plt) makes one figure; returns the PNG path, or None without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.result.setdefault("notes", []).append("matplotlib not installed: no PNG plots")
            return None
        fig = draw(plt)
        path = self.dir / filename
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return str(path)

    def save(self) -> Path:
        self.result["loadavg_end"] = loadavg()
        path = self.dir / "result.json"
        path.write_text(json.dumps(self.result, indent=2, default=str))
        m = self.result["machine"]
        print(f"{m['date']}  {m['cpu']} x{m['cores']}  load average {self.result['loadavg_start']} -> "
              f"{self.result['loadavg_end']}\nwrote {path}", flush=True)
        return path


def stop_all(servers: Iterable[ServerProcess | LoadGen | None]) -> None:
    """Stop every server at once (their grace periods overlap) and close the load generators."""
    servers = [s for s in servers if s is not None]
    stop_servers(s for s in servers if isinstance(s, ServerProcess))
    for s in servers:
        if isinstance(s, LoadGen):
            try:
                s.close()
            except Exception as e:  # keep stopping the others
                print(f"stopping the load generator: {e}", file=sys.stderr)


def wait_all(*servers: ServerProcess, timeout: float = 60.0) -> None:
    """Wait until every server (started in parallel) says SERVING; stop them all if one does not."""
    try:
        for s in servers:
            s.wait_serving(timeout)
    except BaseException:
        stop_all(servers)
        raise
