"""Issue 14, 3.5: SIGTERM on a tier and on the router with 50 streams in flight."""

from __future__ import annotations

import asyncio
import time

from qarr.v1 import common_pb2
from tests.reliability.procmesh import ProcMesh, expected_text, fake_tier, generate, record, request, wait_for

STREAMS = 50
TOKEN_DELAY_MS = 100
SHORT, LONG = 8, 100  # tokens: 0.8 s fits in the 2 s grace, 10 s does not
GRACE_S, NOTICE_S = 2.0, 0.3


def check_drain(outs: list, kinds: list[int], sigterm: float, cut_at: float) -> tuple[float, int]:
    """Short streams all finished whole; long ones ended UNAVAILABLE within 1 s of `cut_at` with the count of
    tokens delivered. Returns (largest distance from cut_at, tokens delivered by the cut streams)."""
    worst, delivered = 0.0, 0
    for n, out in zip(kinds, outs):
        if n == SHORT:
            assert out.code == "OK" and out.text == expected_text(SHORT) and out.delivered == SHORT, out
        else:
            assert out.code == "UNAVAILABLE", (out.code, out.details)
            assert out.last is not None and out.last.finish_reason == common_pb2.FINISH_REASON_ERROR, out
            assert out.delivered == len(out.texts) and out.text == expected_text(out.delivered) and 0 < out.delivered < LONG, out
            worst = max(worst, abs(out.ended - cut_at))
            delivered += out.delivered
    assert worst <= 1.0, worst
    return worst, delivered


async def start_streams(mesh: ProcMesh, **routing) -> tuple[list[asyncio.Task], list[int]]:
    """25 short and 25 long streams, all with their first token before returning."""
    kinds = [SHORT if i % 2 else LONG for i in range(STREAMS)]
    started = 0

    def one_started() -> None:
        nonlocal started
        started += 1

    tasks = [asyncio.create_task(generate(mesh.stub, request(max_tokens=n, **routing), timeout=60, on_text=one_started))
             for n in kinds]
    await wait_for(lambda: started == STREAMS, 20, f"{STREAMS} streams delivering tokens")
    return tasks, kinds


def drained_tier(name: str) -> dict:
    return fake_tier(name, TOKEN_DELAY_MS, grace_seconds=GRACE_S, drain_notice_seconds=NOTICE_S)


async def test_sigterm_on_a_tier_with_50_streams_drains_it_while_the_other_tier_takes_new_calls(tmp_path):
    """SIGTERM on tier a with 50 streams on it (25 fit in its grace, 25 do not): the 25 finish whole, the 25
    end UNAVAILABLE at notice + grace +- 1 s with the count delivered, calls made meanwhile are served by b,
    and a exits 0 within grace + 5 s."""
    mesh = await ProcMesh(tmp_path, [drained_tier("a"), drained_tier("b")]).start()
    try:
        tasks, kinds = await start_streams(mesh, tier="a")
        tier = mesh.tiers["a"]
        tier.terminate()
        sigterm = time.monotonic()
        meanwhile = []
        while tier.exit_code() is None and time.monotonic() - sigterm < GRACE_S + 5:
            meanwhile.append(await generate(mesh.stub, request(max_tokens=2), timeout=10))
            await asyncio.sleep(0.05)
        exited_s = time.monotonic() - sigterm
        code = tier.wait_exit(0)
        outs = await asyncio.gather(*tasks)
    finally:
        await mesh.stop()

    assert code == 0 and exited_s < GRACE_S + 5, (code, exited_s)
    worst, delivered = check_drain(outs, kinds, sigterm, sigterm + NOTICE_S + GRACE_S)
    # a keeps serving during its notice (so no caller is refused while routers learn it is leaving); after it, b.
    assert meanwhile and all(o.code == "OK" for o in meanwhile), [o for o in meanwhile if o.code != "OK"][:3]
    late = [o for o in meanwhile if o.started > sigterm + NOTICE_S]
    assert late and all(o.last.tier == "b" for o in late), [(round(o.started - sigterm, 3), o.last.tier) for o in meanwhile]
    record("drain_tier", f"SIGTERM on a tier with {STREAMS} streams: 25 of 25 that fit in the {GRACE_S:.0f} s grace "
                         f"finished whole; 25 cut UNAVAILABLE with their count ({delivered} tokens) within "
                         f"{worst * 1000:.0f} ms of notice + grace; {len(meanwhile)} calls meanwhile all OK, on the other tier "
                         f"once the {NOTICE_S:g} s notice was over ({sum(o.last.tier == 'b' for o in meanwhile)} of them); "
                         f"the tier exited 0 after {exited_s:.1f} s",
           cut_error_s=worst, exited_s=exited_s, delivered=delivered, meanwhile=len(meanwhile))


async def test_sigterm_on_the_router_with_50_streams_drains_them(tmp_path):
    """SIGTERM on the router with 50 streams in flight: the 25 that fit in its grace finish whole, the 25 that
    do not end UNAVAILABLE at notice + grace +- 1 s with the count delivered, and the router exits 0 within
    grace + 5 s."""
    mesh = await ProcMesh(tmp_path, [drained_tier("a"), drained_tier("b")], grace_seconds=GRACE_S,
                          drain_notice_seconds=NOTICE_S).start()
    try:
        tasks, kinds = await start_streams(mesh)
        router = mesh.router
        router.terminate()
        sigterm = time.monotonic()
        code = await asyncio.to_thread(router.wait_exit, GRACE_S + 5)
        exited_s = time.monotonic() - sigterm
        outs = await asyncio.gather(*tasks)
    finally:
        await mesh.stop()

    assert code == 0 and exited_s < GRACE_S + 5, (code, exited_s)
    worst, delivered = check_drain(outs, kinds, sigterm, sigterm + NOTICE_S + GRACE_S)
    record("drain_router", f"SIGTERM on the router with {STREAMS} streams: 25 of 25 that fit in the {GRACE_S:.0f} s "
                           f"grace finished whole; 25 cut UNAVAILABLE with their count ({delivered} tokens) within "
                           f"{worst * 1000:.0f} ms of notice + grace; the router exited 0 after {exited_s:.1f} s",
           cut_error_s=worst, exited_s=exited_s, delivered=delivered)
