"""Issue 14, 3.0: huge prompts are refused at once and do not slow anyone else down."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from mesh.config import RequestLimits
from qarr.v1 import router_service_pb2 as pb
from router.errors import InvalidRequest
from router.request import ENVELOPE_BYTES, parse_request
from tests.reliability.procmesh import ProcMesh, fake_tier, generate, percentile, record, request

RATE = 20  # small requests a second, sent on a fixed schedule whatever the answers take
FLOW_S = 5.0
BIG = 8
BIG_BYTES = 3_900_000  # under gRPC's 4 MiB message limit, far over the router's 1 MiB prompt limit


async def small_flow(stub, seconds: float, started: asyncio.Event | None = None) -> list:
    """RATE small calls a second for `seconds` (open loop: a slow answer does not delay the next call)."""
    calls = []
    t0 = time.monotonic()
    for i in range(int(seconds * RATE)):
        await asyncio.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
        calls.append(asyncio.create_task(generate(stub, request(max_tokens=4), timeout=10)))
        if started is not None and i == RATE:  # one second in
            started.set()
    return await asyncio.gather(*calls)


async def test_huge_prompts_are_refused_within_a_second_without_slowing_small_requests(tmp_path):
    """8 concurrent 3.9 MB prompts from another client while 20 small requests/s flow: each big one is
    refused INVALID_ARGUMENT within 1 s, before any parsing or tokenizing; the small ones all succeed with
    a p99 under 100 ms over their baseline; no tier is marked down and no breaker opens."""
    mesh = await ProcMesh(tmp_path, [fake_tier("a", 2), fake_tier("b", 2)]).start()
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.reliability.flood", mesh.address, "--count", str(BIG), "--prompt-bytes", str(BIG_BYTES),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=mesh.router.env,
    )
    try:
        assert (await asyncio.wait_for(flood.stdout.readline(), 60)).strip() == b"ready"
        baseline = await small_flow(mesh.stub, FLOW_S)

        started = asyncio.Event()
        flow = asyncio.create_task(small_flow(mesh.stub, FLOW_S, started))
        await started.wait()
        flood.stdin.write(b"go\n")
        await flood.stdin.drain()
        big = json.loads(await asyncio.wait_for(flood.stdout.readline(), 60))
        during = await flow
        tiers = await mesh.tier_info()
        metrics = mesh.metrics()
    finally:
        if flood.returncode is None:
            flood.kill()
        await flood.wait()
        await mesh.stop()

    assert [(code, reason) for code, _, _, reason in big] == [("INVALID_ARGUMENT", "REQUEST_TOO_LARGE")] * BIG, big
    slowest_big = max(seconds for _, seconds, _, _ in big)
    assert slowest_big < 1.0, big
    assert {o.code for o in baseline + during} == {"OK"}, [(o.code, o.details) for o in during if o.code != "OK"]
    p99_base = percentile([o.seconds for o in baseline], 99)
    p99_during = percentile([o.seconds for o in during], 99)
    assert p99_during - p99_base < 0.1, (p99_base, p99_during)
    assert all(t.health == pb.HEALTH_STATE_SERVING and t.breaker == pb.BREAKER_STATE_CLOSED for t in tiers.values()), tiers
    opened = sum(v for (name, labels), v in metrics.items()
                 if name == "qarr_router_breaker_transitions_total" and dict(labels)["to_state"] == "open")
    refused = metrics[("qarr_router_requests_total", (("code", "INVALID_ARGUMENT"), ("finish_reason", "none"), ("tier", "none")))]
    assert opened == 0 and refused == BIG
    record(
        "oversized_input",
        f"{BIG} x {BIG_BYTES / 1e6:.1f} MB prompts refused INVALID_ARGUMENT in at most {slowest_big * 1000:.0f} ms; "
        f"{len(during)} small requests at {RATE}/s meanwhile: p99 {p99_during * 1000:.0f} ms vs {p99_base * 1000:.0f} ms "
        f"baseline (+{(p99_during - p99_base) * 1000:.0f} ms); 0 tiers marked down, 0 breakers opened",
        big_slowest_s=slowest_big, small_p99_baseline_s=p99_base, small_p99_during_s=p99_during, small_requests=len(during),
    )


def test_an_oversized_request_is_refused_before_it_is_decoded():
    """Bytes past max_prompt_bytes + the envelope allowance are refused REQUEST_TOO_LARGE without decoding
    them (3.9 MB of garbage would otherwise be BAD_REQUEST after a decode that holds the loop)."""
    limits = RequestLimits()
    with pytest.raises(InvalidRequest) as e:
        parse_request(b"\xff" * BIG_BYTES, limits)
    assert e.value.reason == "REQUEST_TOO_LARGE" and str(limits.max_prompt_bytes + ENVELOPE_BYTES) in e.value.message
    with pytest.raises(InvalidRequest) as e:
        parse_request(b"\xff" * 100, limits)
    assert e.value.reason == "BAD_REQUEST"
