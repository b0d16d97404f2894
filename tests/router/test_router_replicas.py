"""Replicas of a tier over fake engines on loopback: balance under 64 streams, failover to a sibling replica
after kill -9 and its return, prefix affinity for conversations, DNS discovery, live latency feedback."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import grpc
import pytest

import router.backends as backends_module
from qarr.v1 import common_pb2, router_service_pb2 as pb
from router.backends import resolve_dns
from router.breaker import State
from router.pick import AFFINITY, within_threshold
from tests.harness import start_tier_process
from tests.router.routing_helpers import FakeTier, Router, collect, profile, replicated_entry, request, tier_entry

PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.5, cost=1.0)}
ANY = {"min_accuracy": 0.0, "latency_budget_ms": 60_000}


async def replicated(started, tmp_path, names=("a", "b"), n=2, token_delay_s=0.0, **settings):
    tiers = {name: [await started(FakeTier(name, token_delay_s)) for _ in range(n)] for name in names}
    router = await started(Router(tmp_path, [replicated_entry(name, reps) for name, reps in tiers.items()], PROFILES, **settings))
    await all_replicas_serving(router)
    return tiers, router


async def all_replicas_serving(router) -> None:
    await router.wait_for(
        lambda: all(r.serving for t in router.backends.values() for r in t.replicas.values()), what="every replica SERVING"
    )


async def drain(call) -> pb.GenerateResponse | grpc.aio.AioRpcError:
    last = None
    try:
        async for msg in call:
            last = msg
    except grpc.aio.AioRpcError as e:
        return e
    return last


@pytest.mark.parametrize("prompts", ["distinct", "shared"])
async def test_64_streams_spread_evenly_over_each_tiers_replicas(started, tmp_path, prompts):
    """Two tiers x two replicas, 64 concurrent streams (half pinned to each tier): in each tier the busiest
    replica holds at most 1.5x the streams of the least busy, with distinct prompts and with one shared prefix."""
    tiers, router = await replicated(started, tmp_path, token_delay_s=0.05, health_timeout_s=3.0)
    text = (lambda i: f"question {i}: what is {i} squared?") if prompts == "distinct" else (lambda i: "One shared system prompt. " * 8)
    calls = [router.stub.Generate(request(text(i), max_tokens=200, tier="ab"[i % 2]), timeout=60) for i in range(64)]
    tasks = [asyncio.create_task(drain(c)) for c in calls]
    try:
        await router.wait_for(lambda: sum(t.in_flight for t in router.backends.values()) == 64, timeout=30, what="64 streams open")
        streams = {name: sorted(r.in_flight for r in t.replicas.values()) for name, t in router.backends.items()}
    finally:
        for c in calls:
            c.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a locally cancelled call raises CancelledError
    print(f"\n64 streams ({prompts} prompts): in-flight per replica {streams}")
    for name, (least, busiest) in streams.items():
        assert least + busiest == 32
        assert busiest <= 1.5 * least, (name, least, busiest)


async def test_killed_replica_fails_over_to_its_sibling_and_is_used_again_after_it_returns(started, tmp_path):
    """kill -9 of one replica (a subprocess) of tier a under 16 request loops: streams with no token yet finish on
    a's other replica; once its breaker is open no request fails and tier a keeps serving on the survivor; restarted
    on its port, the replica takes traffic again."""
    proc = start_tier_process("a", "--engine", "fake", "--fake-token-delay-ms", "5", log=tmp_path / "a0.log")
    try:
        await asyncio.to_thread(proc.wait_serving, 30)
        survivor = await started(FakeTier("a", token_delay_s=0.005))
        b = await started(FakeTier("b", token_delay_s=0.005))
        tiers = [{"name": "a", "addresses": [proc.address, survivor.address]}, tier_entry(b)]
        router = await started(Router(tmp_path, tiers, PROFILES))
        await all_replicas_serving(router)
        killed = router.replica("a", proc.address)
        results: list[tuple[float, object]] = []  # (start time, last message or error)
        stop = asyncio.Event()

        async def loop(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                t0 = time.monotonic()
                outcome = await drain(router.stub.Generate(request(f"loop {worker} request {i}", max_tokens=10, **ANY), timeout=20))
                results.append((t0, outcome))

        loops = [asyncio.create_task(loop(w)) for w in range(16)]
        await router.wait_for(lambda: killed.served >= 20, timeout=20, what="the replica serving")
        proc.kill()
        killed_at = time.monotonic()
        await router.wait_for(lambda: killed.breaker.state is State.OPEN, what="the killed replica's breaker OPEN")
        open_at = time.monotonic()
        n_open = len(results)
        await router.wait_for(lambda: len(results) >= n_open + 200, timeout=30, what="200 requests with the replica down")
        proc.start()  # same port
        restarted_at = time.monotonic()
        served_before = killed.served
        # A fresh Python process on a busy 2-core machine can take a while to listen again.
        back = await router.wait_for(lambda: killed.served > served_before, timeout=60, what="the replica serving again")
        await router.wait_for(lambda: len(results) >= n_open + 300, timeout=30, what="more requests")
        stop.set()
        await asyncio.gather(*loops)
    finally:
        proc.stop()

    after_open = [o for t0, o in results if t0 >= open_at]
    down = [o for t0, o in results if open_at <= t0 < restarted_at]
    failed = [o for o in after_open if isinstance(o, grpc.aio.AioRpcError)]
    assert not failed, failed[:3]
    assert all(o.tier == "a" and o.replica == survivor.address for o in down)
    # Streams on the replica with no token yet when it died: retried on its sibling (not on tier b).
    moved = [o for t0, o in results if t0 < open_at and not isinstance(o, grpc.aio.AioRpcError) and o.attempts >= 2]
    assert all(o.tier == "a" and o.replica == survivor.address and o.attempts == 2 for o in moved)
    interrupted = [o for t0, o in results if t0 < killed_at and isinstance(o, grpc.aio.AioRpcError)]
    print(f"\nkill -9 of a replica under 16 loops: breaker OPEN {1000 * (open_at - killed_at):.0f} ms after the kill; "
          f"{len(interrupted)} streams cut mid-way, {len(moved)} moved to the sibling before their first token; "
          f"{len(after_open)} requests after the breaker opened, 0 failed; {len(down)} served by the sibling while down; "
          f"used again {back:.1f} s after its restart")


async def test_conversation_follow_ups_return_to_their_replica(started, tmp_path, monkeypatch):
    """50 conversations x 6 turns at once (each turn after a think time of 0-200 ms) over a tier of two replicas:
    >= 90 % of follow-up turns land on the replica that served the conversation's previous turn (where its prefix
    is cached), and no pick put a replica past its load threshold."""
    real = backends_module.pick_replica
    picks = []

    def spy(views, key, seed, **kw):
        chosen = real(views, key, seed, **kw)
        picks.append((views, chosen, kw))
        return chosen

    monkeypatch.setattr(backends_module, "pick_replica", spy)
    # One process runs the test, the router and both tiers: a Check deadline fit for a loaded machine.
    tiers, router = await replicated(started, tmp_path, names=("a",), token_delay_s=0.01, health_timeout_s=3.0)
    served: dict[int, list[str]] = {}

    async def conversation(i: int) -> None:
        think = random.Random(i)  # deterministic think times: conversations do not move in lockstep
        messages = [common_pb2.ChatMessage(role="system", content="You answer in one line."),
                    common_pb2.ChatMessage(role="user", content=f"Conversation {i}: tell me about topic {i * 7919}.")]
        for turn in range(6):
            await asyncio.sleep(think.uniform(0, 0.2))
            req = pb.GenerateRequest(messages=messages, sampling={"max_tokens": 20}, routing=pb.RoutingHints(**ANY))
            text, last = await collect(router.stub, req, timeout=60)
            served.setdefault(i, []).append(last.replica)
            messages += [common_pb2.ChatMessage(role="assistant", content=text),
                         common_pb2.ChatMessage(role="user", content=f"And turn {turn + 2}?")]

    await asyncio.gather(*(conversation(i) for i in range(50)))
    follow_ups = [(turns[k - 1], turns[k], turns[0]) for turns in served.values() for k in range(1, len(turns))]
    stayed = sum(previous == r for previous, r, _ in follow_ups) / len(follow_ups)
    on_first = sum(first == r for _, r, first in follow_ups) / len(follow_ups)
    by_replica = Counter(turns[0] for turns in served.values())
    ratio, slack = router.server.router.config.picker.affinity_load_ratio, router.server.router.config.picker.affinity_load_slack
    busiest = 0
    for views, chosen, kw in picks:
        loads = {v.address: v.load for v in views}
        least = min(loads.values())
        busiest = max(busiest, loads[chosen.address] + 1)
        assert within_threshold(loads[chosen.address], least, ratio, slack), (loads, chosen)
    spilled = sum(chosen.reason != AFFINITY for _, chosen, _ in picks)
    print(f"\n50 conversations x 6 turns: {stayed:.1%} of {len(follow_ups)} follow-ups on the replica of the previous "
          f"turn ({on_first:.1%} on the first turn's); "
          f"first turns per replica {dict(by_replica)}; {spilled} of {len(picks)} picks left the affinity replica "
          f"(load threshold); most streams on one replica {busiest}")
    assert stayed >= 0.9


async def test_dns_tier_follows_a_changing_set_of_addresses(started, tmp_path):
    """A dns tier's replicas are what its name resolves to, re-resolved every dns_interval_s: a new address takes
    traffic, a vanished one gets none, a failed lookup keeps the replicas known; no restart."""
    r = [await started(FakeTier("a")) for _ in range(3)]
    state = {"answer": [r[0].address]}
    lookups = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        if state["answer"] is None:
            raise OSError("Name or service not known")
        return list(state["answer"])

    tier = {"name": "a", "dns": "tier-a.qarr.test:50061", "dns_interval_s": 0.1}
    router = await started(Router(tmp_path, [tier], PROFILES, resolver=resolver))
    await router.wait_serving("a")

    async def replicas_used(n: int) -> set[str]:
        return {(await collect(router.stub, request(f"prompt {i}", max_tokens=2, **ANY)))[1].replica for i in range(n)}

    assert await replicas_used(10) == {r[0].address}
    for answer in ([r[0].address, r[1].address], [r[1].address, r[2].address]):
        started_at = time.monotonic()
        state["answer"] = answer
        await router.wait_for(lambda: list(router.backends["a"].replicas) == answer, what=f"replicas {answer}")
        await all_replicas_serving(router)
        took = time.monotonic() - started_at
        assert await replicas_used(30) == set(answer)
        print(f"\nresolved to {answer}: replicas followed, all SERVING after {took * 1000:.0f} ms")
    state["answer"] = None
    seen = len(lookups)
    await router.wait_for(lambda: len(lookups) >= seen + 3, what="failed lookups")
    assert list(router.backends["a"].replicas) == [r[1].address, r[2].address]
    assert await replicas_used(10) <= {r[1].address, r[2].address}
    assert lookups[0] == ("tier-a.qarr.test", 50061)


async def test_default_resolver_reads_the_system_resolver():
    """The default resolver asks the event loop's getaddrinfo: localhost gives the loopback address with the port."""
    assert "127.0.0.1:50061" in await resolve_dns("localhost", 50061)


async def test_latency_drift_on_a_tier_moves_routing_within_50_requests(started, tmp_path):
    """Tier a, preferred by its profile, slows down 25x at runtime: with a 150 ms budget, its live estimates move
    traffic to b within 50 requests; once a is fast again and its estimate fades, traffic comes back to a."""
    a = await started(FakeTier("a", token_delay_s=0.002))
    b = await started(FakeTier("b", token_delay_s=0.002))
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES, feedback={"stale_half_life_s": 2.0}))
    await router.wait_serving("a", "b")
    hints = {"min_accuracy": 0.0, "latency_budget_ms": 150}

    async def served_by() -> str:
        return (await collect(router.stub, request(max_tokens=10, **hints)))[1].tier

    assert [await served_by() for _ in range(10)] == ["a"] * 10
    a.engine.token_delay_s = 0.05
    moved_after = None
    for n in range(1, 51):
        if await served_by() == "b":
            moved_after = n
            break
    assert moved_after is not None, "routing did not move within 50 requests"
    following = [await served_by() for _ in range(10)]
    info = (await router.tiers())["a"]
    print(f"\nlatency drift on a (2 -> 50 ms/token): routing moved to b after {moved_after} requests; next 10: "
          f"{following.count('b')} on b; a's live estimate TTFT {info.live.ttft_ms:.0f} ms, "
          f"{info.live.decode_tokens_per_second:.0f} tok/s")
    assert following.count("b") >= 8
    a.engine.token_delay_s = 0.002
    started_at = time.monotonic()
    while await served_by() != "a":
        assert time.monotonic() - started_at < 30, "traffic did not return to a"
    print(f"a fast again: traffic back on a after {time.monotonic() - started_at:.1f} s")


async def test_list_tiers_and_qarr_tiers_show_each_replica_under_its_tier(started, tmp_path):
    """ListTiers gives tier-level aggregates (in-flight summed) and each replica with its own health, breaker,
    in-flight count and live latency; `qarr tiers` prints a row per replica under its tier."""
    from tests.clients.conftest import run_cli

    tiers, router = await replicated(started, tmp_path, names=("a",), token_delay_s=0.02)
    for i in range(12):
        await collect(router.stub, request(f"warm {i}", max_tokens=3, **ANY))
    calls = [router.stub.Generate(request(f"open {i}", max_tokens=200, **ANY), timeout=30) for i in range(6)]
    for c in calls:
        await c.read()
    info = (await router.tiers())["a"]
    for c in calls:
        c.cancel()
    assert info.in_flight == 6 == sum(r.in_flight for r in info.replicas)
    assert {r.address for r in info.replicas} == {t.address for t in tiers["a"]}
    assert all(r.health == pb.HEALTH_STATE_SERVING and r.breaker == pb.BREAKER_STATE_CLOSED for r in info.replicas)
    assert info.live.HasField("ttft_ms") and info.live.samples == 12
    assert sum(r.served for r in info.replicas) == 12
    code, out, err = await run_cli("tiers", "--target", f"127.0.0.1:{router.server.mesh.port}")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[0] == "a" and [ln.split()[1] for ln in lines[2:]] == ["replica", "replica"]
    print("\n" + out)
