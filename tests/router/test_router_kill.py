"""Tiers that die or hang as separate processes: mid-stream kill under 50 streams, and a hung tier."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc

from qarr.v1 import common_pb2, router_service_pb2 as pb
from router.breaker import State
from tests.router.routing_helpers import FakeTier, Router, profile, request
from tests.harness import start_tier_process
from tier_server.fake_engine import WORDS

PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.5, cost=1.0)}
ANY = {"min_accuracy": 0.0, "latency_budget_ms": 60_000}


def expected_text(n: int) -> str:
    return "".join(WORDS[i % len(WORDS)] + " " for i in range(n))


async def fake_tier_process(name: str, token_delay_ms: float):
    proc = start_tier_process(name, "--engine", "fake", "--fake-token-delay-ms", str(token_delay_ms))
    await asyncio.to_thread(proc.wait_serving, 30)
    return proc, proc.address


class Stream:
    """One Generate call read in the background: text chunks, last message, error and when it ended."""

    def __init__(self, stub, max_tokens: int) -> None:
        self.first_token = asyncio.Event()
        self.texts: list[str] = []
        self.last: pb.GenerateResponse | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.ended_at = 0.0
        self.task = asyncio.create_task(self._run(stub, max_tokens))

    async def _run(self, stub, max_tokens: int) -> None:
        try:
            async for msg in stub.Generate(request(max_tokens=max_tokens, **ANY), timeout=30):
                if msg.text:
                    self.texts.append(msg.text)
                    self.first_token.set()
                else:
                    self.last = msg
        except grpc.aio.AioRpcError as e:
            self.error = e
        self.ended_at = time.monotonic()


async def test_kill_mid_stream_under_50_streams(started, tmp_path):
    """Killing a tier under 50 streams: streams with no token yet finish on the other tier;
    the rest end within 2 s with UNAVAILABLE, a count of delivered tokens, and no duplicated text."""
    proc, address = await fake_tier_process("a", token_delay_ms=300)
    try:
        b = await started(FakeTier("b", token_delay_s=0.002))
        tiers = [{"name": "a", "address": address}, {"name": "b", "address": b.address}]
        router = await started(Router(tmp_path, tiers, PROFILES))
        await router.wait_serving("a", "b")
        max_tokens = 10
        early = [Stream(router.stub, max_tokens) for _ in range(25)]
        await asyncio.wait_for(asyncio.gather(*(s.first_token.wait() for s in early)), 10)
        late = [Stream(router.stub, max_tokens) for _ in range(25)]
        await router.wait_for(lambda: router.backends["a"].in_flight == 50, what="50 streams open on a")
        assert not any(s.first_token.is_set() for s in late)
        proc.kill()
        killed_at = time.monotonic()
        open_after = await router.wait_for(lambda: router.backends["a"].breaker_state is State.OPEN, what="a's breaker OPEN")
        await asyncio.wait_for(asyncio.gather(*(s.task for s in early + late)), 15)
        _, last = await _collect(router)
        assert (last.tier, last.attempts) == ("b", 1)  # new traffic avoids a
    finally:
        proc.stop()

    for s in late:  # no token yet when a died: completed on b, whole and once
        assert s.error is None, s.error
        assert (s.last.tier, s.last.attempts, s.last.finish_reason) == ("b", 2, common_pb2.FINISH_REASON_LENGTH)
        assert "".join(s.texts) == expected_text(max_tokens)
        assert s.last.usage.completion_tokens == max_tokens
    slowest = 0.0
    for s in early:  # already streaming: UNAVAILABLE, the delivered count, the text so far and nothing twice
        assert s.error is not None and s.error.code() == grpc.StatusCode.UNAVAILABLE
        assert s.last.finish_reason == common_pb2.FINISH_REASON_ERROR and s.last.tier == "a"
        assert 1 <= s.last.generated_tokens == len(s.texts) < max_tokens
        assert "".join(s.texts) == expected_text(len(s.texts))
        slowest = max(slowest, s.ended_at - killed_at)
    assert slowest < 2.0
    assert open_after < 0.2  # within one health interval (test setting: 0.2 s)
    print(f"\nkill under 50 streams: 25 failed over to b; 25 ended UNAVAILABLE, slowest {slowest * 1000:.0f} ms "
          f"after the kill; breaker OPEN after {open_after * 1000:.0f} ms")


async def test_hung_tier_is_avoided_within_one_health_interval(started, tmp_path):
    """A tier that stops answering (SIGSTOP) is marked down by Check's deadline within an interval;
    new traffic goes elsewhere, and after it resumes its breaker closes again through HALF_OPEN."""
    proc, address = await fake_tier_process("a", token_delay_ms=0)
    try:
        b = await started(FakeTier("b"))
        tiers = [{"name": "a", "address": address}, {"name": "b", "address": b.address}]
        router = await started(Router(tmp_path, tiers, PROFILES))
        await router.wait_serving("a", "b")
        os.kill(proc.pid, signal.SIGSTOP)
        waited = await router.wait_for(lambda: router.backends["a"].serving is False, what="a marked down")
        # health_interval_s 0.2 + health_timeout_s 0.5 (test settings), with slack for a busy machine
        assert waited < 0.2 + 0.5 + 0.3, waited
        info = (await router.tiers())["a"]
        assert info.breaker == pb.BREAKER_STATE_OPEN
        started_at = time.monotonic()
        text, last = await _collect(router)
        assert (last.tier, last.attempts) == ("b", 1) and time.monotonic() - started_at < 1.0
        os.kill(proc.pid, signal.SIGCONT)
        seen = set()

        async def closed() -> bool:
            info = (await router.tiers())["a"]
            seen.add(info.breaker)
            if info.breaker == pb.BREAKER_STATE_HALF_OPEN and router.backends["a"].serving:
                await _collect(router)
            return info.breaker == pb.BREAKER_STATE_CLOSED

        await router.wait_for(closed, timeout=5, what="a's breaker CLOSED")
        assert pb.BREAKER_STATE_HALF_OPEN in seen
        print(f"\nhung tier marked down after {waited * 1000:.0f} ms")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.stop()


async def _collect(router):
    text, last = [], None
    async for msg in router.stub.Generate(request(max_tokens=2, **ANY), timeout=5):
        text.append(msg.text)
        last = msg
    return "".join(text), last
