"""A mesh of real processes on loopback for the reliability tests, and what the tests read from outside it.

    mesh = await ProcMesh(tmp_path, [fake_tier("a"), fake_tier("b")]).start()
    out = await generate(mesh.stub, request(max_tokens=8))
    await mesh.stop()

Tier servers (`python -m tier_server --engine fake`) and the router (`python -m router`) are started
through launcher/process.py, each in its own process group. The tests see them only as a caller and an
operator would: Generate, ListTiers (health, breaker, in-flight), a tier's GetLoad and health, the
router's /metrics, and /proc (RSS, threads, open files, CPU time). Figures are printed and merged into
results/reliability.json (`record`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from launcher.process import REPO, ServerProcess, free_port, router_process, stop_all, tier_process
from mesh.config import load_mesh, parse_mesh
from mesh.status import reason_of, retry_pushback_ms
from profiler.stats import percentile  # noqa: F401  (the one percentile helper; the tests import it from here)
from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc, tier_service_pb2, tier_service_pb2_grpc
from tests.harness import wait_for  # noqa: F401  (the reliability tests import it from here)
from tests.process_tree import descendants

RESULTS = REPO / "results" / "reliability.json"

# Fast health polling and short drains for tests; the production defaults are in mesh/config.py.
ROUTER_SETTINGS = {
    "health_interval_s": 0.2,
    "health_timeout_s": 0.5,
    "load_interval_s": 0.2,
    "reload_interval_s": 1.0,
    "grace_seconds": 2.0,
    "drain_notice_seconds": 0.3,
    "breaker": {"failure_threshold": 5, "open_base_s": 0.5, "open_max_s": 2.0, "half_open_probes": 2},
}
CLIENT_OPTIONS = (("grpc.enable_retries", 0),)


def fake_tier(name: str, token_delay_ms: float = 0.0, *, max_model_len: int = 2048, max_in_flight: int = 256, **serve) -> dict:
    """A mesh-file tier entry for a fake-engine tier server on a free port."""
    serve = {"engine": "fake", "fake_token_delay_ms": token_delay_ms, "grace_seconds": 2.0,
             "drain_notice_seconds": 0.3, "log_level": "WARNING", **serve}
    return {"name": name, "address": f"127.0.0.1:{free_port()}", "model": "fake", "quantization": name,
            "max_model_len": max_model_len, "max_in_flight": max_in_flight, "serve": serve}


class ProcMesh:
    """Tier server processes and a router process, from one mesh file written to `directory`."""

    def __init__(self, directory: Path, tiers: list[dict], *, router_args: tuple[str, ...] = (),
                 via: dict[str, str] | None = None, **router) -> None:
        """`via`: tier name -> the address the router reaches that tier at (a proxy in front of it)."""
        self.directory = directory
        self.metrics_port = free_port()
        data = {"listen": f"127.0.0.1:{free_port()}", **ROUTER_SETTINGS, **router, "tiers": tiers}
        data["observability"] = {"metrics_port": self.metrics_port, **data.get("observability", {})}
        self.listen = parse_mesh(data)  # where each tier server listens
        via = via or {}
        data["tiers"] = [{**t, "address": via.get(t["name"], t["address"])} for t in tiers]
        self.path = directory / "mesh.yaml"
        self.path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.config = load_mesh(self.path)
        self.tiers: dict[str, ServerProcess] = {
            t.name: tier_process(t, log=directory / f"tier-{t.name}.log") for t in self.listen.tiers
        }
        self.router: ServerProcess = router_process(
            self.path, self.config, args=["--log-level", "WARNING", *router_args], log=directory / "router.log"
        )
        self.address = self.config.listen
        self.channel: grpc.aio.Channel | None = None
        self.stub = None

    async def start(self, timeout: float = 60.0) -> ProcMesh:
        """Start every tier, then the router; return once the router sees every tier SERVING."""
        try:
            for t in self.tiers.values():
                t.start()
            self.router.start()
            await asyncio.gather(*(asyncio.to_thread(s.wait_serving, timeout) for s in [*self.tiers.values(), self.router]))
            await self._connect(timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _connect(self, timeout: float) -> None:
        """Open the caller's channel to the router; return once the router sees every tier SERVING."""
        self.channel = grpc.aio.insecure_channel(self.address, options=CLIENT_OPTIONS)
        self.stub = router_service_pb2_grpc.RouterServiceStub(self.channel)
        await wait_for(self.all_serving, timeout, "the router sees every tier SERVING")

    async def _disconnect(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    async def stop(self) -> None:
        await self._disconnect()
        await asyncio.to_thread(stop_all, [self.router, *self.tiers.values()])

    # ------------------------------------------------------------ what an operator sees

    async def tier_info(self) -> dict[str, pb.TierInfo]:
        return {t.name: t for t in (await self.stub.ListTiers(pb.ListTiersRequest(), timeout=5)).tiers}

    async def all_serving(self) -> bool:
        return all(t.health == pb.HEALTH_STATE_SERVING and t.breaker == pb.BREAKER_STATE_CLOSED
                   for t in (await self.tier_info()).values())

    def metrics(self) -> dict[tuple[str, tuple], float]:
        return scrape(self.metrics_port)

    def requests_counted(self) -> dict[str, float]:
        """The router's qarr_router_requests_total summed by gRPC status."""
        counts: dict[str, float] = {}
        for (name, labels), v in self.metrics().items():
            if name == "qarr_router_requests_total":
                code = dict(labels)["code"]
                counts[code] = counts.get(code, 0) + v
        return counts

    def tier_address(self, name: str) -> str:
        """Where the tier server itself listens (not a proxy in front of it)."""
        return self.listen.tier(name).address


class LauncherMesh(ProcMesh):
    """The same mesh run by `python -m launcher` (what `make up` runs): it starts the tiers and the router and
    restarts any that exits. `tier_pid(name)` finds a tier server's current process."""

    def __init__(self, directory: Path, tiers: list[dict], **router) -> None:
        super().__init__(directory, tiers, **router)
        argv = [sys.executable, "-m", "launcher", "--config", str(self.path), "--log-dir", str(directory),
                "--restart-backoff", "0.5"]
        self.launcher = ServerProcess("launcher", argv, self.address, log=directory / "launcher.log", stop_timeout_s=30)

    async def start(self, timeout: float = 60.0) -> LauncherMesh:
        try:
            self.launcher.start()
            await asyncio.to_thread(self.launcher.wait_serving, timeout)
            await self._connect(timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        await self._disconnect()
        recorded = [p.pid for p in descendants(self.launcher.pid)] if self.launcher.running else []
        await asyncio.to_thread(self.launcher.stop)
        for pid in recorded:  # only after a failure: the launcher stops its servers itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def tier_pid(self, name: str) -> int:
        for p in descendants(self.launcher.pid):
            args = p.cmdline.split()
            if p.ppid == self.launcher.pid and "tier_server" in args and args[args.index("--name") + 1] == name:
                return p.pid
        raise LookupError(f"no tier server {name} under the launcher")

    def log(self) -> str:
        return self.launcher.log_tail(100_000)


# ---------------------------------------------------------------- calls

def request(prompt: str = "Name three colours.", max_tokens: int = 8, *, request_id: str = "", **routing) -> pb.GenerateRequest:
    routing = {"min_accuracy": 0.0, "latency_budget_ms": 600_000, **routing}
    return pb.GenerateRequest(prompt=prompt, request_id=request_id, sampling=common_pb2.SamplingParams(max_tokens=max_tokens),
                              routing=pb.RoutingHints(**routing))


@dataclass
class Outcome:
    """One Generate call as its caller saw it."""

    code: str = ""
    details: str = ""
    reason: str = ""  # ErrorInfo reason of an error
    pushback_ms: int | None = None  # grpc-retry-pushback-ms of an error (negative: do not retry)
    texts: list[str] = field(default_factory=list)
    last: pb.GenerateResponse | None = None
    started: float = 0.0
    first_at: float = 0.0
    ended: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def delivered(self) -> int:
        return self.last.generated_tokens if self.last is not None else 0


async def generate(stub, req: pb.GenerateRequest, timeout: float | None = 30.0, on_text: Callable[[], None] | None = None) -> Outcome:
    """Call Generate and read the whole stream; an error is recorded, not raised."""
    out = Outcome(started=time.monotonic())
    try:
        async for msg in stub.Generate(req, timeout=timeout):
            if msg.text:
                if not out.texts:
                    out.first_at = time.monotonic()
                    if on_text is not None:
                        on_text()
                out.texts.append(msg.text)
            if msg.finish_reason:
                out.last = msg
        out.code = "OK"
    except grpc.aio.AioRpcError as e:
        out.code, out.details = e.code().name, e.details() or ""
        out.reason, out.pushback_ms = reason_of(e.trailing_metadata()), retry_pushback_ms(e.trailing_metadata())
    out.ended = time.monotonic()
    return out


def expected_text(n: int) -> str:
    """The fake engine's text for n tokens."""
    from tier_server.fake_engine import WORDS

    return "".join(WORDS[i % len(WORDS)] + " " for i in range(n))


async def tier_load(address: str) -> common_pb2.Load:
    async with grpc.aio.insecure_channel(address) as ch:
        return (await tier_service_pb2_grpc.TierServiceStub(ch).GetLoad(tier_service_pb2.GetLoadRequest(), timeout=2)).load


async def tier_health(address: str, timeout: float = 1.0) -> str:
    """SERVING / NOT_SERVING as the tier's own health service says, or the error code when it does not answer."""
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


# ---------------------------------------------------------------- /metrics and /proc

def log_lines(path: Path, message: str = "request finished") -> list[dict]:
    """The JSON log lines of a server's log file with this message (the router's per-request line by default)."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{message}"' in line:
            lines.append(json.loads(line))
    return lines


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass(frozen=True)
class Usage:
    """What a process holds, from /proc."""

    rss_mib: float
    threads: int
    fds: int
    cpu_s: float


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    ticks = stat[stat.rindex(")") + 2:].split()
    cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
    return Usage(int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd")), cpu)


# ---------------------------------------------------------------- figures

def record(test: str, summary: str, **figures) -> None:
    """Print a test's figure and merge it into results/reliability.json under the test's name."""
    print(f"\n[{test}] {summary}")
    RESULTS.parent.mkdir(exist_ok=True)
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        data = {}
    data[test] = {"summary": summary, **figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
