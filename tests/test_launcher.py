"""The launcher (`python -m launcher`, what `make up` runs) as a user runs it: real processes on free ports.

It starts the tiers and then the router; when a tier server dies (kill -9) under load the router moves
traffic to the other tier while the launcher restarts the dead one; Ctrl-C (SIGINT to the launcher's
process group, as a terminal sends it) drains and stops every process of the mesh, engine processes
included, within grace + 5 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from launcher.process import ServerProcess, free_port, is_serving
from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc
from tests.harness import wait_for
from tests.process_tree import Proc, alive, descendants, in_groups, wait_until_none

GRACE_S = 2.0  # drain grace of every server in the fast tests
STREAMS = 20


# ---------------------------------------------------------------- a mesh under a launcher

# Quick polling, but a 2 s health deadline: a loaded machine can take longer than 0.5 s to answer a
# Check, and a tier marked down for that would trip its breaker. A killed tier is seen at once (Watch).
FAST_HEALTH = {"health_interval_s": 0.2, "health_timeout_s": 2.0, "load_interval_s": 0.2}


def write_mesh(tmp_path: Path, tiers: list[dict], grace_s: float, **router) -> Path:
    """A mesh file for the launcher and the router it starts (fast health polling unless `router` says)."""
    mesh = {"listen": f"127.0.0.1:{free_port()}", **FAST_HEALTH, "grace_seconds": grace_s, "drain_notice_seconds": 0.5,
            **router, "tiers": tiers}
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh, sort_keys=False))
    return path


def fake_tier(name: str, token_delay_ms: float) -> dict:
    serve = {"engine": "fake", "fake_token_delay_ms": token_delay_ms, "grace_seconds": GRACE_S, "drain_notice_seconds": 0.5}
    return {"name": name, "address": f"127.0.0.1:{free_port()}", "model": "fake", "quantization": "bf16", "serve": serve}


def start_launcher(path: Path, log: Path, *args: str) -> ServerProcess:
    """`python -m launcher` in its own session and process group, as a shell runs a foreground job;
    its address is the router's. (The stop timeout only matters for cleanup after a failure.)"""
    listen = yaml.safe_load(path.read_text())["listen"]
    argv = [sys.executable, "-m", "launcher", "--config", str(path), *args]
    return ServerProcess("launcher", argv, listen, log=log, stop_timeout_s=30).start()


def tier_server(launcher: ServerProcess, name: str) -> Proc:
    """The launcher's tier server process for tier `name`."""
    for p in descendants(launcher.pid):
        args = p.cmdline.split()
        if p.ppid == launcher.pid and "tier_server" in args and args[args.index("--name") + 1] == name:
            return p
    raise LookupError(f"no tier server {name} under the launcher")


def launcher_lines(launcher: ServerProcess) -> str:
    """What the launcher itself said (its servers' logs share the file)."""
    return "\n".join(line for line in launcher.log.read_text(errors="replace").splitlines() if line.startswith("[launcher]"))


def mesh_processes(launcher: ServerProcess) -> list[Proc]:
    """The launcher and every process below it (servers, their engine processes), as recorded now."""
    return [p for p in alive([launcher.pid])] + descendants(launcher.pid)


def cleanup(launcher: ServerProcess, recorded: list[Proc]) -> None:
    """After a failed test: kill whatever of the mesh is left (the session fixture checks too)."""
    launcher.kill()
    for p in in_groups({p.pgid for p in recorded}) + alive(p.pid for p in recorded):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def tiers(stub) -> dict[str, pb.TierInfo]:
    return {t.name: t for t in (await stub.ListTiers(pb.ListTiersRequest(), timeout=5)).tiers}


# ---------------------------------------------------------------- load

@dataclass
class Call:
    started: float
    ended: float = 0.0
    code: str = ""
    tier: str = ""
    tokens: int = 0
    finish: int = 0


async def call(stub, max_tokens: int, tier: str = "", timeout: float = 60.0) -> Call:
    c = Call(time.monotonic())
    req = pb.GenerateRequest(prompt="Name three colours.", request_id=f"launcher-test-{id(c)}",
                             sampling=common_pb2.SamplingParams(max_tokens=max_tokens), routing=pb.RoutingHints(tier=tier))
    try:
        async for msg in stub.Generate(req, timeout=timeout):
            c.tokens = msg.generated_tokens or c.tokens
            c.tier, c.finish = msg.tier or c.tier, msg.finish_reason or c.finish
        c.code = "OK"
    except grpc.aio.AioRpcError as e:
        c.code = e.code().name
    c.ended = time.monotonic()
    return c


class Load:
    """STREAMS callers, each sending one stream after another until stopped; every call recorded."""

    def __init__(self, stub, max_tokens: int, timeout: float) -> None:
        self.calls: list[Call] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._caller(stub, max_tokens, timeout)) for _ in range(STREAMS)]

    async def _caller(self, stub, max_tokens: int, timeout: float) -> None:
        while not self._stop.is_set():
            c = await call(stub, max_tokens, timeout=timeout)
            self.calls.append(c)

    def finished_after(self, t: float) -> list[Call]:
        return [c for c in self.calls if c.started > t]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


# ---------------------------------------------------------------- the scenario both tests run

@dataclass
class KillFigures:
    killed_at: float
    breaker_open_s: float
    serving_again_s: float
    engine_gone_s: float | None
    engine_processes: int
    after_open: int
    back_on_victim: int
    cut_in_flight: int


async def kill_a_tier_under_load(launcher: ServerProcess, stub, victim: str, other: str, max_tokens: int,
                                 restart_within_s: float, after_open: int, load_through_restart: bool,
                                 call_timeout_s: float = 60.0) -> KillFigures:
    """kill -9 `victim`'s tier server under STREAMS streams: every call started after its breaker was seen
    OPEN (at least `after_open` of them, and all those sent until it is back when `load_through_restart`)
    succeeds on `other`; its engine processes are gone; the launcher has it SERVING again in time."""
    victim_server = tier_server(launcher, victim)
    victim_group = descendants(victim_server.pid)  # engine processes, for a real tier
    address = (await tiers(stub))[victim].address
    load = Load(stub, max_tokens, call_timeout_s)
    await wait_for(lambda: len(load.calls) >= STREAMS, 2 * call_timeout_s, f"{STREAMS} calls done before the kill")
    os.kill(victim_server.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    opened_at = await wait_for(lambda: _breaker_open(stub, victim), 10, f"{victim}'s breaker OPEN")
    engine_gone_at = None
    if victim_group:
        left, waited = await asyncio.to_thread(wait_until_none, lambda: alive(p.pid for p in victim_group), 10)
        assert not left, f"engine processes of the killed tier still running: {left}"
        engine_gone_at = killed_at + waited
    await wait_for(lambda: len(load.finished_after(opened_at)) >= after_open, 2 * call_timeout_s,
                   f"{after_open} calls after the breaker opened")
    if not load_through_restart:
        await load.stop()
    back_at = await wait_for(lambda: asyncio.to_thread(is_serving, address, 0.5), restart_within_s + 5,
                             f"{victim} SERVING again", poll_s=0.1)
    await load.stop()

    after = load.finished_after(opened_at)
    failed = [c for c in after if c.code != "OK"]
    assert not failed, f"{len(failed)} of {len(after)} calls after the breaker opened failed: {failed[:5]}"
    # The other tier served them while the victim was down; once back (SERVING, breaker probing) it may serve again.
    early = [c for c in after if c.tier != other and c.started < back_at - 0.5]
    assert not early and all(c.tier in (other, victim) for c in after), early or after
    cut = [c for c in load.calls if c.started <= opened_at and c.code != "OK"]
    assert all(c.code == "UNAVAILABLE" for c in cut), cut
    assert tier_server(launcher, victim).pid != victim_server.pid
    figures = KillFigures(killed_at, opened_at - killed_at, back_at - killed_at,
                          engine_gone_at - killed_at if engine_gone_at else None, len(victim_group), len(after),
                          len([c for c in after if c.tier == victim]), len(cut))
    assert figures.serving_again_s < restart_within_s, figures
    # The console said it all: which tier exited, how, when it restarts, and that it is back.
    await wait_for(lambda: f"[launcher] tier {victim} SERVING again" in launcher_lines(launcher), 30, "the launcher's notice")
    said = launcher_lines(launcher)
    assert f"[launcher] tier {victim} exited (SIGKILL)" in said and "restarting in 1 s" in said, said
    return figures


async def _breaker_open(stub, name: str) -> bool:
    return (await tiers(stub))[name].breaker == pb.BREAKER_STATE_OPEN


def sigint_stops_everything(launcher: ServerProcess, grace_s: float) -> tuple[float, float, list[Proc]]:
    """SIGINT to the launcher's process group (a terminal's Ctrl-C): the launcher exits 0 and every
    process recorded before, and every process of their groups, is gone within grace + 5 s.
    Returns (when SIGINT was sent, seconds until nothing was left, the processes recorded)."""
    recorded = mesh_processes(launcher)
    groups = {p.pgid for p in recorded}
    sent = time.monotonic()
    os.killpg(launcher.pid, signal.SIGINT)
    # Waits past the bound so that a failure still shows the launcher's own account of the stop.
    assert launcher.wait_exit(grace_s + 60) == 0, launcher_lines(launcher)
    left, _ = wait_until_none(lambda: alive(p.pid for p in recorded) + in_groups(groups), 10)
    stop_s = time.monotonic() - sent
    assert not left, f"still running {stop_s:.1f} s after SIGINT: {left}"
    assert stop_s < grace_s + 5, f"{stop_s:.1f} s after SIGINT:\n{launcher_lines(launcher)}"
    return sent, stop_s, recorded


# ---------------------------------------------------------------- fast tests (fake engines)

async def test_a_killed_tier_is_restarted_while_the_other_serves_and_ctrl_c_leaves_no_process(tmp_path):
    """kill -9 of one fake tier under 20 streams: 0 errors after its breaker opens (the other tier serves),
    it is SERVING again within 60 s; then SIGINT stops every process within grace + 5 s."""
    path = write_mesh(tmp_path, [fake_tier("a", 20), fake_tier("b", 20)], GRACE_S)
    launcher = start_launcher(path, tmp_path / "launcher.log")
    recorded: list[Proc] = []
    try:
        await asyncio.to_thread(launcher.wait_serving, 60)
        async with grpc.aio.insecure_channel(launcher.address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            await wait_for(lambda: _all_serving(stub), 30, "the router sees both tiers SERVING")
            # Without profiles the router prefers the first tier: a carries the load, so kill a.
            figures = await kill_a_tier_under_load(launcher, stub, "a", "b", max_tokens=10, restart_within_s=60,
                                                   after_open=2 * STREAMS, load_through_restart=True)
            await wait_for(lambda: _all_serving(stub), 30, "the router sees a SERVING again")
        _, stop_s, recorded = await asyncio.to_thread(sigint_stops_everything, launcher, GRACE_S)
    finally:
        cleanup(launcher, recorded or mesh_processes(launcher))
    print(f"\nfake tiers: kill -9 of tier a under {STREAMS} streams: breaker OPEN after {figures.breaker_open_s * 1000:.0f} ms, "
          f"{figures.after_open} calls after it all OK ({figures.back_on_victim} of them on a once back), "
          f"{figures.cut_in_flight} cut in flight on a; "
          f"a SERVING again {figures.serving_again_s:.1f} s after the kill; SIGINT -> {len(recorded)} processes gone "
          f"in {stop_s:.1f} s (grace {GRACE_S:.0f} s)")


async def _all_serving(stub) -> bool:
    return all(t.health == pb.HEALTH_STATE_SERVING for t in (await tiers(stub)).values())


def test_sigterm_stops_a_mesh_that_is_up_and_leaves_no_process(tmp_path):
    """The launcher prints its banner once the mesh is up; SIGTERM to the launcher alone stops every process."""
    path = write_mesh(tmp_path, [fake_tier("a", 0), fake_tier("b", 0)], GRACE_S)
    launcher = start_launcher(path, tmp_path / "launcher.log")
    recorded: list[Proc] = []
    try:
        launcher.wait_serving(60)
        wait_until_none(lambda: [] if "QARR mesh is up" in launcher.log.read_text() else [launcher], 30)
        assert "qarr generate" in launcher.log.read_text()
        recorded = mesh_processes(launcher)
        assert len([p for p in recorded if p.ppid == launcher.pid]) == 3  # two tiers and the router
        launcher.terminate()
        assert launcher.wait_exit(GRACE_S + 5) == 0
        assert not wait_until_none(lambda: alive(p.pid for p in recorded), 1)[0]
    finally:
        cleanup(launcher, recorded)


def test_a_tier_that_cannot_start_stops_the_tiers_already_started(tmp_path):
    """When one tier cannot bind its port, the launcher exits 1 and the tier it did start is stopped too."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        blocked = fake_tier("b", 0)
        blocked["address"] = f"127.0.0.1:{taken.getsockname()[1]}"
        path = write_mesh(tmp_path, [fake_tier("a", 0), blocked], GRACE_S)
        launcher = start_launcher(path, tmp_path / "launcher.log")
        started: list[Proc] = []
        deadline = time.monotonic() + 30
        while launcher.exit_code() is None and time.monotonic() < deadline:
            started = [p for p in descendants(launcher.pid) if p.ppid == launcher.pid] or started
            time.sleep(0.05)
        assert launcher.wait_exit(60) == 1
    assert started, "the launcher never started a tier"
    assert not alive(p.pid for p in started)
    assert "the mesh did not start" in launcher.log.read_text()


# ---------------------------------------------------------------- the same with real vLLM tiers

@pytest.mark.engine
async def test_real_tiers_kill_restart_and_ctrl_c_drain(bundled_model, tmp_path):
    """Two real vLLM CPU tiers: kill -9 of one tier server under 20 streams ends its EngineCore/Worker
    processes too, the other tier serves every call after its breaker opened, it is SERVING again within
    60 s (or twice this run's cold start on a loaded machine); then Ctrl-C with 20 streams in flight
    (10 per tier): the engine processes, in their tiers' own process groups, never get the SIGINT, the
    streams that fit in the grace finish whole, and every process is gone within grace + 5 s."""
    grace_s, tokens = 20.0, 8
    serve = {"dtype": "bfloat16", "kv_cache_gib": 0.25, "grace_seconds": grace_s, "drain_notice_seconds": 1.0,
             "log_level": "WARNING"}
    tiers_ = [{"name": n, "address": f"127.0.0.1:{free_port()}", "model": str(bundled_model), "quantization": "bf16",
               "max_model_len": 1024, "serve": serve} for n in ("a", "b")]
    # The router's default health polling (1 s, 2 s deadline) and breaker: real engines on a loaded 2-core
    # machine can take longer than the fast tests' 0.5 s to answer a health check, and a tier marked down
    # for that would trip its breaker.
    path = write_mesh(tmp_path, tiers_, grace_s, health_interval_s=1.0, health_timeout_s=2.0, load_interval_s=1.0)
    launcher = start_launcher(path, tmp_path / "launcher.log")
    recorded: list[Proc] = []
    try:
        await asyncio.to_thread(launcher.wait_serving, 600)
        async with grpc.aio.insecure_channel(launcher.address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            await wait_for(lambda: _all_serving(stub), 60, "the router sees both tiers SERVING")
            # A restart is a cold start of the engine: under 60 s on a quiet machine, minutes when the machine is
            # shared (several engineers' suites at once: first starts of 90-250 s, and the load changes within
            # a run); bound it by both.
            cold_start_s = time.monotonic() - launcher.started_at
            restart_within_s = max(60.0, 2 * cold_start_s)
            engines = [p for p in descendants(tier_server(launcher, "a").pid) if p.is_engine]
            assert {p.cmdline for p in engines} >= {"VLLM::EngineCore", "VLLM::Worker"}, engines
            kill = await kill_a_tier_under_load(launcher, stub, "a", "b", max_tokens=16, restart_within_s=restart_within_s,
                                                after_open=STREAMS, load_through_restart=False,
                                                call_timeout_s=300)

            # Ctrl-C with 10 streams in flight on each tier, each short enough to finish within the grace.
            await wait_for(lambda: _all_serving(stub), 60, "the router sees a SERVING again")
            await wait_for(lambda: _breaker_lets_through(stub, "a"), 60, "a's breaker past OPEN (30 s after the kill)")
            assert (await call(stub, 4, tier="a", timeout=300)).code == "OK"  # the probe that closes a's breaker
            recorded = mesh_processes(launcher)
            engines = [p for p in recorded if p.is_engine]
            assert len(engines) >= 4 and all(p.pgid not in (launcher.pid, os.getpgid(0)) for p in engines)
            streams = [asyncio.create_task(call(stub, tokens, tier=t, timeout=300)) for t in ("a", "b") * (STREAMS // 2)]
            # Every stream reached its tier: running there, or already ended (the model may stop after a token).
            await wait_for(lambda: _all_reached_the_tiers(stub, streams), 300, f"{STREAMS} streams running on the tiers or done")
            sent, stop_s, recorded = await asyncio.to_thread(sigint_stops_everything, launcher, grace_s)
            done = await asyncio.gather(*streams)
        # Whole: OK with its last message (LENGTH at `tokens`, or STOP where the model ended its answer first).
        finished = [c for c in done if c.code == "OK" and (c.finish, c.tokens) in {(common_pb2.FINISH_REASON_LENGTH, tokens)}
                    | {(common_pb2.FINISH_REASON_STOP, n) for n in range(1, tokens + 1)}]
        # Every stream that fits in the grace finishes whole (on a quiet machine: all 20); one that does not
        # fit (a machine too loaded to decode 20 x 8 tokens in the grace) may only be cut by the grace
        # itself, never earlier by a signal reaching its engine.
        cut = [c for c in done if c not in finished]
        assert all(c.ended >= sent + grace_s for c in cut), cut
        slowest = max(c.ended - c.started for c in done)
    finally:
        cleanup(launcher, recorded or mesh_processes(launcher))
    print(f"\nreal tiers: kill -9 of tier a under {STREAMS} streams: its {kill.engine_processes} child processes gone "
          f"{kill.engine_gone_s * 1000:.0f} ms after the kill, breaker OPEN after {kill.breaker_open_s * 1000:.0f} ms, "
          f"{kill.after_open} calls after it all OK ({kill.back_on_victim} on a once back), {kill.cut_in_flight} cut in "
          f"flight on a; a SERVING again "
          f"{kill.serving_again_s:.1f} s after the kill (both tiers' cold start took {cold_start_s:.0f} s). Ctrl-C with {STREAMS} streams in flight: {len(finished)} of "
          f"{STREAMS} finished, {len(cut)} cut at the grace (slowest {slowest:.1f} s), {len(recorded)} processes gone {stop_s:.1f} s after SIGINT "
          f"(grace {grace_s:.0f} s)")


async def _breaker_lets_through(stub, name: str) -> bool:
    return (await tiers(stub))[name].breaker != pb.BREAKER_STATE_OPEN


async def _all_reached_the_tiers(stub, streams: list[asyncio.Task]) -> bool:
    # Done ones counted first: one that ends after this count is still in flight when ListTiers answers, or
    # is missed until the next poll; none is counted twice.
    done = sum(s.done() for s in streams)
    return done + sum(t.in_flight for t in (await tiers(stub)).values()) >= len(streams)


async def test_launcher_runs_a_tiers_replicas_and_router_workers_and_ctrl_c_leaves_no_process(tmp_path):
    """A tier with two listed replicas and `--router-workers 2`: the launcher starts a tier server per replica and
    a router parent with two workers; calls over several connections reach both replicas; Ctrl-C stops all of it
    (workers included) within grace + 5 s."""
    tier = fake_tier("a", token_delay_ms=2)
    tier.pop("address")
    tier["addresses"] = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    path = write_mesh(tmp_path, [tier], GRACE_S)
    launcher = start_launcher(path, tmp_path / "launcher.log", "--router-workers", "2")
    recorded: list[Proc] = []
    try:
        await asyncio.to_thread(launcher.wait_serving, 120)
        await wait_for(lambda: len([p for p in descendants(launcher.pid) if "--worker" in p.cmdline.split()]) == 2, 30, "two workers")
        recorded = mesh_processes(launcher)
        replicas = set()
        for i in range(16):
            options = (("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0))
            async with grpc.aio.insecure_channel(launcher.address, options=options) as channel:
                req = pb.GenerateRequest(prompt=f"question {i}", sampling=common_pb2.SamplingParams(max_tokens=2))
                last = [m async for m in router_service_pb2_grpc.RouterServiceStub(channel).Generate(req, timeout=30)][-1]
                replicas.add(last.replica)
        assert replicas == set(tier["addresses"])
        servers = [p for p in descendants(launcher.pid) if p.ppid == launcher.pid and "tier_server" in p.cmdline.split()]
        assert len(servers) == 2
        _, stop_s, _ = await asyncio.to_thread(sigint_stops_everything, launcher, GRACE_S)
    except BaseException:
        cleanup(launcher, recorded or mesh_processes(launcher))
        raise
    print(f"\nlauncher, 2 replicas + 2 router workers: both replicas served; Ctrl-C left nothing after {stop_s:.1f} s")
