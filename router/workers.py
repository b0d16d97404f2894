"""`python -m router --workers N`: N router processes on one port, each a full router, kept running by a parent.

One Python router process is bound by one core (grpc.aio runs one event loop). With
--workers N the `python -m router` process becomes a small parent that:

- fixes the port (a free one when the config says port 0) and starts N workers,
  `python -m router ... --worker I`, each listening on it with SO_REUSEPORT: the
  kernel spreads new connections over them (a connection, with all its streams,
  stays on one worker: clients spread load by opening several connections);
- serves /metrics for all of them (prometheus-client's multiprocess mode: each
  worker writes its samples to files in a private directory, the parent adds them
  up on every scrape; counters and histograms sum, gauges say how they combine);
- restarts a worker that exits (1 s, doubling to 30 s);
- on SIGTERM/SIGINT tells every worker to drain, waits for them (notice + grace + a
  margin), kills what is left, and exits.

Workers stay in the parent's process group (a launcher's group kill reaches them)
and get SIGTERM if the parent dies, even by SIGKILL (PR_SET_PDEATHSIG, set by
util-linux's setpriv: see launcher/process.py for why not a preexec_fn). No
worker outlives its parent on any stop path.

What is per worker (per process): breakers, retry budget, in-flight counts and
limits (max_in_flight applies per worker), live latency estimates, health watches.
Prefix affinity is not: rendezvous hashing gives every worker (and every router
replica behind a Service) the same replica for the same prefix.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mesh.config import MeshConfig, split_address

log = logging.getLogger("qarr.router")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
SHUTDOWN_MARGIN_S = 3.0
SETPRIV = shutil.which("setpriv")


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host.strip("[]"), 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen | None = None
    restart_at: float = 0.0
    delay_s: float = 1.0
    started_at: float = 0.0


class Workers:
    """The parent: starts, watches, restarts and stops the workers."""

    def __init__(self, n: int, argv: Sequence[str], listen: str, env: dict[str, str], grace_s: float) -> None:
        self.workers = [Worker(i) for i in range(n)]
        self.argv = list(argv)
        self.listen = listen
        self.env = env
        self.grace_s = grace_s
        self.stopping = False

    def _start(self, w: Worker) -> None:
        argv = [*self.argv, "--listen", self.listen, "--worker", str(w.index)]
        if SETPRIV:
            argv = [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        w.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL)
        w.started_at = time.monotonic()
        log.info("router worker %d started (pid %d)", w.index, w.proc.pid)

    def start(self) -> None:
        for w in self.workers:
            self._start(w)

    def step(self) -> None:
        """Restart workers that exited, after their backoff (back to 1 s once one stayed up a minute)."""
        now = time.monotonic()
        for w in self.workers:
            if w.proc is None:
                if now >= w.restart_at:
                    self._start(w)
                continue
            code = w.proc.poll()
            if code is None:
                continue
            _forget(w.proc.pid, self.env)
            if now - w.started_at >= 60:
                w.delay_s = 1.0
            log.warning("router worker %d (pid %d) exited with %s; restarting in %.0f s", w.index, w.proc.pid, code, w.delay_s)
            w.proc, w.restart_at = None, now + w.delay_s
            w.delay_s = min(w.delay_s * 2, 30.0)

    def stop(self) -> None:
        """SIGTERM to every worker (they drain), then SIGKILL to any still there after grace + margin."""
        self.stopping = True
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + SHUTDOWN_MARGIN_S
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for w in self.workers:
            if w.proc is not None:
                _forget(w.proc.pid, self.env)


def _forget(pid: int, env: dict[str, str]) -> None:
    """A worker is gone: drop its live gauges (multiprocess mode)."""
    path = env.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def run(n: int, worker_argv: Sequence[str], config: MeshConfig) -> int:
    """Run N workers until SIGTERM/SIGINT. `worker_argv`: `python -m router` and the flags every worker gets."""
    host, port = split_address(config.listen)
    listen = f"{host}:{port or free_port(host)}"
    stop = {"signal": None}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    obs = config.observability
    metrics_dir = tempfile.mkdtemp(prefix="qarr-router-metrics-") if obs.metrics_port is not None else None
    env = dict(os.environ)
    env.pop(MULTIPROC_ENV, None)
    if metrics_dir:
        env[MULTIPROC_ENV] = metrics_dir
    workers = Workers(n, worker_argv, listen, env, config.grace_seconds + config.drain_notice_seconds)
    metrics = None
    try:
        if metrics_dir:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            from mesh.observability import start_metrics_server

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=metrics_dir)
            metrics = start_metrics_server(registry, obs.metrics_host, obs.metrics_port)
            log.info("router metrics of %d workers on http://%s:%d/metrics", n, obs.metrics_host, metrics.port)
        workers.start()
        log.info("router: %d workers on %s (SO_REUSEPORT)", n, listen)
        while stop["signal"] is None:
            workers.step()
            time.sleep(0.2)
        log.info("router: %s, stopping %d workers", signal.Signals(stop["signal"]).name, n)
    finally:
        workers.stop()
        if metrics is not None:
            metrics.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
