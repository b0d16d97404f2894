"""Issue 14, 3.2: an engine that dies mid-stream, fake and real (vLLM's EngineCore killed), under the launcher."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import pytest

from qarr.v1 import common_pb2, router_service_pb2 as pb
from tests.process_tree import descendants
from tests.reliability.procmesh import LauncherMesh, Outcome, fake_tier, generate, record, request, tier_health, wait_for
from tier_server.__main__ import EXIT_ENGINE_DEAD

CALLERS = 16


class Load:
    """CALLERS callers, each sending one stream after another until stopped; every call kept."""

    def __init__(self, stub, max_tokens: int) -> None:
        self.calls: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._caller(stub, max_tokens)) for _ in range(CALLERS)]

    async def _caller(self, stub, max_tokens: int) -> None:
        while not self._stop.is_set():
            self.calls.append(await generate(stub, request(max_tokens=max_tokens), timeout=60))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@dataclass
class Figures:
    not_serving_s: float
    breaker_open_s: float
    cut: int
    cut_slowest_s: float
    moved: int
    exited_s: float
    restarted_s: float
    closed_s: float


def engine_process(tier_pid: int, marker: str) -> int:
    """The tier server's engine process: the child whose name or command line holds `marker`."""
    for p in descendants(tier_pid):
        if p.name.startswith(marker) or marker in p.cmdline:
            return p.pid
    raise LookupError(f"no {marker} process under tier server {tier_pid}")


async def kill_engine_under_load(mesh: LauncherMesh, marker: str, max_tokens: int, restart_within_s: float) -> Figures:
    """Kill tier a's engine process under CALLERS streams; check what callers, the tier, the router and the
    launcher do, in order."""
    address = mesh.tier_address("a")
    tier_pid = mesh.tier_pid("a")
    victim = engine_process(tier_pid, marker)
    load = Load(mesh.stub, max_tokens)
    await wait_for(lambda: len(load.calls) >= CALLERS, 120, f"{CALLERS} calls done before the kill")
    await wait_for(lambda: _streaming_on(mesh, "a"), 30, "streams in flight on a")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    not_serving = await wait_for(lambda: _not_serving(address), 10, "tier a says NOT_SERVING (or is gone)")
    opened = await wait_for(lambda: _breaker(mesh, "a", pb.BREAKER_STATE_OPEN), 10, "a's breaker OPEN")
    exited = await wait_for(lambda: f"tier a exited (code {EXIT_ENGINE_DEAD})" in mesh.log(), 30, "the tier server exits",
                            poll_s=0.05)
    back = await wait_for(lambda: f"tier a SERVING again" in mesh.log(), restart_within_s, "the launcher restarted tier a")
    closed = await wait_for(lambda: _closed_after_probe(mesh, "a"), 60, "a's breaker CLOSED again")
    await load.stop()
    assert mesh.tier_pid("a") != tier_pid

    in_flight = [c for c in load.calls if c.started < killed < c.ended]
    cut = [c for c in in_flight if c.code != "OK"]
    for c in cut:  # no hang: UNAVAILABLE at once, with the count of tokens delivered
        assert c.code == "UNAVAILABLE" and c.last is not None, c
        assert c.last.finish_reason == common_pb2.FINISH_REASON_ERROR and c.delivered == len(c.texts) < max_tokens, c
    cut_slowest = max((c.ended - killed for c in cut), default=0.0)
    assert cut_slowest < 2.0, cut_slowest
    moved = [c for c in load.calls if opened < c.started and c.ended < back]
    assert moved and all(c.code == "OK" and c.last.tier == "b" for c in moved), [c for c in moved if c.code != "OK"][:3]
    assert all(c.code == "OK" for c in load.calls if c.started > opened), "a call failed after the breaker opened"

    def transitions() -> dict[tuple[str, str], float]:
        return {(dict(k[1])["from_state"], dict(k[1])["to_state"]): v for k, v in mesh.metrics().items()
                if k[0] == "qarr_router_breaker_transitions_total" and dict(k[1])["tier"] == "a"}

    # The router mirrors breaker states into its metrics every 0.25 s: the counter may trail ListTiers by that.
    expected = (("closed", "open"), ("open", "half_open"), ("half_open", "closed"))
    await wait_for(lambda: all(transitions().get(t) for t in expected), 5, lambda: f"transitions counted: {transitions()}",
                   poll_s=0.1)
    assert exited - killed < 10.0  # watchdog, 1 s for the failed calls' last messages, the engine's shutdown
    return Figures(not_serving - killed, opened - killed, len(cut), cut_slowest, len(moved), exited - killed, back - killed,
                   closed - killed)


async def _streaming_on(mesh, name: str) -> bool:
    return (await mesh.tier_info())[name].in_flight > 0


async def _not_serving(address: str) -> bool:
    return await tier_health(address, timeout=0.5) != "SERVING"


async def _closed_after_probe(mesh, name: str) -> bool:
    """CLOSED yet? While HALF_OPEN, send a call pinned to the tier: the probe the breaker waits for (with live
    latency in the picture, unpinned calls may all prefer the other tier)."""
    info = (await mesh.tier_info())[name]
    if info.breaker == pb.BREAKER_STATE_HALF_OPEN:
        await generate(mesh.stub, request(max_tokens=2, tier=name), timeout=60)
    return info.breaker == pb.BREAKER_STATE_CLOSED


async def _breaker(mesh, name: str, state) -> bool:
    return (await mesh.tier_info())[name].breaker == state


def summary(kind: str, f: Figures) -> str:
    return (f"{kind}: engine killed under {CALLERS} streams: tier NOT_SERVING after {f.not_serving_s * 1000:.0f} ms, "
            f"breaker OPEN after {f.breaker_open_s * 1000:.0f} ms; {f.cut} streams in flight on a ended UNAVAILABLE with "
            f"their delivered count within {f.cut_slowest_s * 1000:.0f} ms; {f.moved} calls meanwhile all OK on b; the tier "
            f"server exited {EXIT_ENGINE_DEAD} {f.exited_s:.1f} s after the kill, the launcher had it SERVING again after "
            f"{f.restarted_s:.1f} s and its breaker "
            f"went HALF_OPEN -> CLOSED {f.closed_s:.1f} s after the kill")


async def test_fake_engine_death_mid_stream(tmp_path):
    """The fake engine's stand-in process killed mid-stream: no call hangs (the ones in flight end UNAVAILABLE
    with their delivered count within 2 s), the tier says NOT_SERVING within 1 s, its breaker opens and every
    later call is served by the other tier; the tier server exits 3, the launcher restarts it, and its breaker
    goes OPEN -> HALF_OPEN -> CLOSED."""
    tiers = [fake_tier("a", 20, fake_engine_process=True), fake_tier("b", 20)]
    mesh = await LauncherMesh(tmp_path, tiers).start()
    try:
        f = await kill_engine_under_load(mesh, "qarr-fake-engine-core", max_tokens=20, restart_within_s=60)
    finally:
        await mesh.stop()
    assert f.not_serving_s < 1.0
    record("engine_dead_fake", summary("fake engine", f), **vars(f))


@pytest.mark.engine
async def test_real_engine_death_mid_stream(tmp_path, bundled_model):
    """vLLM's EngineCore process of a real tier killed mid-stream: the same promises as for the fake engine;
    the other tier is a fake one (the router's behaviour does not depend on it)."""
    serve = {"dtype": "bfloat16", "kv_cache_gib": 0.25, "grace_seconds": 5.0, "drain_notice_seconds": 0.5,
             "log_level": "WARNING"}
    real = {**fake_tier("a"), "model": str(bundled_model), "quantization": "bf16", "max_model_len": 1024, "serve": serve}
    mesh = await LauncherMesh(tmp_path, [real, fake_tier("b", 20)]).start(timeout=600)
    try:
        f = await kill_engine_under_load(mesh, "VLLM::EngineCore", max_tokens=48, restart_within_s=600)
    finally:
        await mesh.stop()
    assert f.not_serving_s < 1.0
    record("engine_dead_real", summary("real vLLM engine", f), **vars(f))
