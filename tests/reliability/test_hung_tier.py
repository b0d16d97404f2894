"""Issue 14, 3.6: a tier that hangs (SIGSTOP) or sits behind a black-holed link, with streams in flight on it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from qarr.v1 import common_pb2, router_service_pb2 as pb
from tests.reliability.blackhole import BlackHole
from tests.reliability.procmesh import (
    ROUTER_SETTINGS, ProcMesh, expected_text, fake_tier, generate, record, request, wait_for,
)

STREAMS = 10
STALL_S = 1.0  # the router's stalled_stream_s in these tests (default 5 s)
HEALTH_S = ROUTER_SETTINGS["health_interval_s"] + ROUTER_SETTINGS["health_timeout_s"]
# A stream on a tier that stopped answering ends within: the next health check's deadline, stalled_stream_s,
# and one look of the router's stall check (a quarter of stalled_stream_s), plus 1 s for a loaded machine.
STREAM_BOUND_S = HEALTH_S + STALL_S + STALL_S / 4 + 1.0


async def hang_a_tier_under_streams(mesh: ProcMesh, hang: Callable[[], None], unhang: Callable[[], None]) -> dict:
    started = 0

    def one_started() -> None:
        nonlocal started
        started += 1

    streams = [asyncio.create_task(generate(mesh.stub, request(max_tokens=1000, tier="a"), timeout=60, on_text=one_started))
               for _ in range(STREAMS)]
    await wait_for(lambda: started == STREAMS, 20, f"{STREAMS} streams delivering on a")
    hang()
    hung = time.monotonic()
    down = await wait_for(lambda: _health(mesh, "a", pb.HEALTH_STATE_NOT_SERVING), 10, "the router marks a down")
    moved = [await generate(mesh.stub, request(max_tokens=4), timeout=10) for _ in range(5)]
    outs = await asyncio.wait_for(asyncio.gather(*streams), 30)
    unhang()
    resumed = time.monotonic()
    closed = await wait_for(lambda: _closed_after_probes(mesh), 30, "a's breaker CLOSED again")

    for o in outs:
        assert (o.code, o.reason) == ("UNAVAILABLE", "TIER_UNRESPONSIVE"), (o.code, o.reason, o.details)
        assert o.last is not None and o.last.finish_reason == common_pb2.FINISH_REASON_ERROR
        assert o.delivered == len(o.texts) and o.text == expected_text(o.delivered), o
    slowest = max(o.ended for o in outs) - hung
    assert down - hung < HEALTH_S + 0.5, down - hung
    assert slowest < STREAM_BOUND_S, slowest
    assert all(o.code == "OK" and o.last.tier == "b" for o in moved), moved
    return {"marked_down_s": down - hung, "streams_ended_s": slowest, "bound_s": STREAM_BOUND_S,
            "closed_after_resume_s": closed - resumed}


async def _health(mesh: ProcMesh, name: str, state) -> bool:
    return (await mesh.tier_info())[name].health == state


async def _closed_after_probes(mesh: ProcMesh) -> bool:
    info = (await mesh.tier_info())["a"]
    if info.breaker == pb.BREAKER_STATE_HALF_OPEN and info.health == pb.HEALTH_STATE_SERVING:
        await generate(mesh.stub, request(max_tokens=2), timeout=10)  # unpinned calls probe a
    return info.breaker == pb.BREAKER_STATE_CLOSED


def summary(how: str, f: dict) -> str:
    return (f"{how} with {STREAMS} streams on it: marked down after {f['marked_down_s'] * 1000:.0f} ms (health check "
            f"every {ROUTER_SETTINGS['health_interval_s']:g} s, deadline {ROUTER_SETTINGS['health_timeout_s']:g} s); "
            f"every stream on it ended UNAVAILABLE TIER_UNRESPONSIVE with its count within {f['streams_ended_s']:.2f} s "
            f"(bound {f['bound_s']:.2f} s = check + deadline + stalled_stream_s {STALL_S:g} s + a quarter of it + 1 s); "
            f"new calls on the other tier; breaker CLOSED {f['closed_after_resume_s']:.1f} s after it resumed")


async def test_a_sigstopped_tier_is_marked_down_and_its_streams_end(tmp_path):
    """SIGSTOP on tier a with 10 streams on it: the router's health deadline marks it down within interval +
    deadline; each stream ends UNAVAILABLE with its count within the stated bound (gRPC keepalive alone left
    them open past 60 s); new calls go to b; after SIGCONT a's breaker closes through HALF_OPEN."""
    mesh = await ProcMesh(tmp_path, [fake_tier("a", 20), fake_tier("b", 20)], stalled_stream_s=STALL_S).start()
    pid = mesh.tiers["a"].pid
    try:
        f = await hang_a_tier_under_streams(mesh, lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT))
    finally:
        os.kill(pid, signal.SIGCONT)
        await mesh.stop()
    record("hung_tier_sigstop", summary("SIGSTOP on a tier", f), **f)


async def test_a_black_holed_tier_is_marked_down_and_its_streams_end(tmp_path):
    """Tier a reached through a loopback proxy that stops forwarding (connections open, no byte moves): the same
    promises as for SIGSTOP; when the proxy forwards again a's breaker closes."""
    a = fake_tier("a", 20)
    proxy = await BlackHole(a["address"]).start()
    mesh = await ProcMesh(tmp_path, [a, fake_tier("b", 20)], via={"a": proxy.address}, stalled_stream_s=STALL_S).start()
    try:
        f = await hang_a_tier_under_streams(mesh, proxy.stop_forwarding, proxy.resume)
    finally:
        proxy.resume()
        await mesh.stop()
        await proxy.close()
    record("hung_tier_blackhole", summary("A black-holed link to a tier", f), **f)
