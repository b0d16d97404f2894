"""Issue 14, 3.3 and 3.4: cancelled calls and passed deadlines end in the engine too; the other calls are untouched."""

from __future__ import annotations

import asyncio
import time

import grpc

from qarr.v1 import router_service_pb2 as pb
from tests.reliability.procmesh import (
    ProcMesh, expected_text, fake_tier, free_port, generate, record, request, scrape, tier_load, wait_for,
)

STREAMS = 100
TOKEN_DELAY_MS = 10


def tier_counts(port: int) -> dict[str, float]:
    """A tier's qarr_tier_requests_total by gRPC status (warm-up calls included)."""
    counts: dict[str, float] = {}
    for (name, labels), v in scrape(port).items():
        if name == "qarr_tier_requests_total":
            code = dict(labels)["code"]
            counts[code] = counts.get(code, 0) + v
    return counts


def metered_tiers(token_delay_ms: float) -> tuple[list[dict], dict[str, int]]:
    ports = {"a": free_port(), "b": free_port()}
    return [fake_tier(n, token_delay_ms, metrics_port=ports[n]) for n in ports], ports


async def engines_idle(mesh: ProcMesh) -> bool:
    loads = await asyncio.gather(*(tier_load(mesh.tier_address(n)) for n in mesh.tiers))
    return all(load.running_requests == 0 and load.waiting_requests == 0 for load in loads)


async def cancelled_after(stub, req: pb.GenerateRequest, chunks: int) -> int:
    """Read `chunks` text messages, then cancel the call; the tokens it had."""
    call = stub.Generate(req, timeout=30)
    for _ in range(chunks):
        await call.read()
    call.cancel()
    return chunks


async def test_100_streams_every_10th_cancelled_the_90_others_get_exactly_their_tokens(tmp_path):
    """100 concurrent streams through the router, every 10th cancelled by its caller after 3 tokens: the other
    90 get exactly their tokens (text, count, usage), each cancelled one is aborted in its tier's engine (the
    tiers count 10 CANCELLED), and no engine has anything left running."""
    tiers, ports = metered_tiers(TOKEN_DELAY_MS)
    mesh = await ProcMesh(tmp_path, tiers).start()
    try:
        before = {n: tier_counts(p) for n, p in ports.items()}
        lengths = [20 + i % 13 for i in range(STREAMS)]  # 20-32 tokens: 0.2-0.3 s each
        calls = [
            cancelled_after(mesh.stub, request(max_tokens=n), 3) if i % 10 == 9 else generate(mesh.stub, request(max_tokens=n))
            for i, n in enumerate(lengths)
        ]
        results = await asyncio.gather(*calls)
        cancelled_at = time.monotonic()
        idle_at = await wait_for(lambda: engines_idle(mesh), 5, "no request running in either engine")
        await wait_for(lambda: sum(tier_counts(p).get("CANCELLED", 0) - before[n].get("CANCELLED", 0)
                                   for n, p in ports.items()) == STREAMS // 10, 5, "the tiers counted 10 cancelled calls")
        after = {n: tier_counts(p) for n, p in ports.items()}
        routed = mesh.requests_counted()
    finally:
        await mesh.stop()

    served = [(n, r) for i, (n, r) in enumerate(zip(lengths, results)) if i % 10 != 9]
    for n, out in served:
        assert out.code == "OK", out
        assert out.text == expected_text(n) and out.delivered == n and out.last.usage.completion_tokens == n, out
    delta = {code: sum(after[t].get(code, 0) - before[t].get(code, 0) for t in ports) for code in ("OK", "CANCELLED")}
    assert delta == {"OK": 90, "CANCELLED": 10}, delta
    assert routed.get("CANCELLED") == 10 and routed.get("OK", 0) >= 90, routed
    record("abort", f"{STREAMS} streams, every 10th cancelled after 3 tokens: 90 of 90 others got exactly their "
                    f"20-32 tokens; the tiers counted 10 CANCELLED and 90 OK; engines idle "
                    f"{(idle_at - cancelled_at) * 1000:.0f} ms after the last call ended",
           served_exact=90, tier_cancelled=delta["CANCELLED"], idle_after_s=idle_at - cancelled_at)


DEADLINE_S = 2.0
CALLS = 10


async def test_a_2s_deadline_ends_at_2s_and_the_tier_aborts_within_half_a_second(tmp_path):
    """10 concurrent calls with a 2 s deadline on 10 s streams: each ends DEADLINE_EXCEEDED at 2 s +- 0.1 s as
    its caller sees it, with text delivered until then; within 0.5 s of the deadline no engine has a request
    left (the deadline travelled router -> tier), and neither breaker counted it against its tier."""
    tiers, ports = metered_tiers(TOKEN_DELAY_MS)
    mesh = await ProcMesh(tmp_path, tiers).start()
    try:
        before = {n: tier_counts(p) for n, p in ports.items()}
        outs = await asyncio.gather(*(generate(mesh.stub, request(max_tokens=1000), timeout=DEADLINE_S) for _ in range(CALLS)))
        deadline = max(o.started for o in outs) + DEADLINE_S
        idle_at = await wait_for(lambda: engines_idle(mesh), 5, "no request running in either engine")
        after = {n: tier_counts(p) for n, p in ports.items()}
        tiers_info = await mesh.tier_info()
    finally:
        await mesh.stop()

    assert {o.code for o in outs} == {"DEADLINE_EXCEEDED"}, [(o.code, o.details) for o in outs]
    assert all(o.texts for o in outs)
    errors = [o.seconds - DEADLINE_S for o in outs]
    assert max(abs(e) for e in errors) <= 0.1, errors
    abort_s = idle_at - deadline
    assert abort_s < 0.5, abort_s
    ended = sum(after[t].get(code, 0) - before[t].get(code, 0) for t in ports for code in ("CANCELLED", "DEADLINE_EXCEEDED"))
    assert ended == CALLS, (before, after)
    assert all(t.breaker == pb.BREAKER_STATE_CLOSED for t in tiers_info.values())
    record("deadline", f"{CALLS} calls with a {DEADLINE_S:.0f} s deadline: all DEADLINE_EXCEEDED at "
                       f"{min(errors) * 1000:+.0f}..{max(errors) * 1000:+.0f} ms of it; engines idle "
                       f"{max(abort_s, 0) * 1000:.0f} ms after the deadline; breakers closed",
           error_min_ms=min(errors) * 1000, error_max_ms=max(errors) * 1000, tier_abort_s=abort_s)
