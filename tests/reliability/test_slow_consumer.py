"""Issue 14, 3.8: callers that read nothing hold a bounded amount of the router's memory (gRPC flow control)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from tests.reliability.procmesh import ProcMesh, expected_text, fake_tier, record, usage, wait_for

TOKENS = 5_000
LONG_TOKENS = 100_000
STALLED = 20
HOLD_S = 12.0
BOUND_KIB = 512  # router memory a stalled stream may hold: its 64 KiB window from the tier, gRPC's buffers, slack
# Bytes a fake token takes on the wire (text, count, gRPC prefix, HTTP/2 framing), measured: ~19.
WIRE_BYTES = 19


async def test_callers_that_read_nothing_hold_bounded_router_memory(tmp_path):
    """A caller process stopped dead (SIGSTOP: it reads nothing, not even into gRPC's buffers) with one
    5,000-token stream and 20 of 100,000 tokens open: for 12 s the router holds at most 512 KiB a stream and
    stops growing (flow control: 64 KiB windows to the tiers, no BDP growth); once the caller runs again it
    reads its 5,000 tokens, exactly."""
    mesh = await ProcMesh(tmp_path, [fake_tier(n, 0, max_model_len=LONG_TOKENS + 1_000) for n in ("a", "b")]).start()
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.reliability.slowreader", mesh.address, "--short", str(TOKENS),
        "--long", str(LONG_TOKENS), "--streams", str(STALLED),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=mesh.router.env,
    )
    try:
        idle = usage(mesh.router.pid)
        assert (await asyncio.wait_for(reader.stdout.readline(), 60)).strip() == b"open"
        os.kill(reader.pid, signal.SIGSTOP)
        await wait_for(lambda: _streams_at_least(mesh, STALLED), 20, "the streams open at the tiers")
        t0 = time.monotonic()
        samples = []
        while (now := time.monotonic() - t0) < HOLD_S:
            samples.append((now, usage(mesh.router.pid).rss_mib - idle.rss_mib))
            await asyncio.sleep(0.5)
        os.kill(reader.pid, signal.SIGCONT)
        reader.stdin.write(b"read\n")
        await reader.stdin.drain()
        result = json.loads(await asyncio.wait_for(reader.stdout.readline(), 60))
        await wait_for(lambda: _streams_at_least(mesh, 0, exactly=True), 20, "no stream left")
        after = usage(mesh.router.pid)
    finally:
        if reader.returncode is None:
            with_cont = reader.pid
            os.kill(with_cont, signal.SIGCONT)
            reader.kill()
        await reader.wait()
        await mesh.stop()

    assert result["code"] == "OK"
    texts = [t for t in result["texts"] if t]
    assert "".join(texts) == expected_text(TOKENS) and len(texts) == TOKENS
    peak = max(g for _, g in samples)
    per_stream_kib = peak * 1024 / (STALLED + 1)
    queued_mib = STALLED * LONG_TOKENS * WIRE_BYTES / 2**20
    assert per_stream_kib <= BOUND_KIB, samples
    record(
        "slow_consumer",
        f"a caller stopped dead for {HOLD_S:.0f} s with {STALLED + 1} streams open (one of 5,000 tokens, {STALLED} of "
        f"100,000: {queued_mib:.0f} MiB if the router queued them): router RSS +{peak:.1f} MiB at most "
        f"({per_stream_kib:.0f} KiB a stream, bound {BOUND_KIB} KiB); then the caller read its 5,000 tokens exactly; RSS after "
        f"{after.rss_mib - idle.rss_mib:+.1f} MiB",
        peak_growth_mib=peak, per_stream_kib=per_stream_kib, bound_kib=BOUND_KIB, queued_mib=queued_mib,
        samples=[[round(t, 1), round(g, 2)] for t, g in samples],
    )


async def _streams_at_least(mesh: ProcMesh, n: int, exactly: bool = False) -> bool:
    open_ = sum(t.in_flight for t in (await mesh.tier_info()).values())
    return open_ == n if exactly else open_ >= n
