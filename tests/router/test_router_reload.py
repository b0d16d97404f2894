"""Config and profiles files reload while the router runs; a broken edit keeps the last good one."""

from __future__ import annotations

import time

from tests.router.routing_helpers import FakeTier, Router, collect, profile, request, tier_entry

PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.5, cost=1.0)}
ANY = {"min_accuracy": 0.0, "latency_budget_ms": 60_000}


async def served_by(router) -> str:
    _, last = await collect(router.stub, request(max_tokens=2, **ANY))
    return last.tier


async def until_served_by(router, tier: str, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while await served_by(router) != tier:
        assert time.monotonic() - started < timeout, f"routing did not move to {tier} within {timeout} s"
    return time.monotonic() - started


async def test_config_edit_changes_routing_and_broken_edit_changes_nothing(started, tmp_path):
    """Shrinking a's context in the config moves traffic to b within 2 s; broken edits after it change nothing."""
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    # The production default poll interval, so the figure is the one users get.
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES, reload_interval_s=0.5))
    await router.wait_serving("a", "b")
    assert await served_by(router) == "a"

    router.config_data["tiers"][0]["max_model_len"] = 16  # the prompt no longer fits a
    router.write_config()
    took = await until_served_by(router, "b")
    assert took < 2.0
    print(f"\nconfig edit -> routing changed after {took * 1000:.0f} ms")

    reloader = router.server.reloader
    for broken in ("tiers: [ {name: a,", "tiers: []\n", "breaker: {failure_threshold: 0}\ntiers: [{name: a, address: x}]\n"):
        rejected = reloader.rejected
        router.write_config(broken)
        await router.wait_for(lambda: reloader.rejected == rejected + 1, timeout=2, what="broken edit seen")
        assert [await served_by(router) for _ in range(5)] == ["b"] * 5
        assert set(router.backends) == {"a", "b"}


async def test_profiles_edit_changes_routing(started, tmp_path):
    """Editing the profiles file (a's accuracy drops below the floor) moves traffic within 2 s; a broken one is ignored."""
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES))
    await router.wait_serving("a", "b")

    async def served_with_floor() -> str:
        _, last = await collect(router.stub, request(max_tokens=2, min_accuracy=0.4, latency_budget_ms=60_000))
        return last.tier

    assert await served_with_floor() == "a"
    router.profiles_data["tiers"]["a"]["accuracy"] = 0.1
    router.write_profiles()
    started_at = time.monotonic()
    while await served_with_floor() != "b":
        assert time.monotonic() - started_at < 2.0
    rejected = router.server.reloader.rejected
    router.profiles_path.write_text("version: 1\ntiers: {a: {accuracy: 7}}\n")
    await router.wait_for(lambda: router.server.reloader.rejected == rejected + 1, timeout=2, what="broken profiles seen")
    assert await served_with_floor() == "b"


async def test_tier_added_and_removed_by_config_edit(started, tmp_path):
    """A tier added to the config file starts taking calls without a restart; a removed one stops."""
    a = await started(FakeTier("a"))
    c = await started(FakeTier("c"))
    router = await started(Router(tmp_path, [tier_entry(a)], PROFILES))
    await router.wait_serving("a")
    router.config_data["tiers"] = [tier_entry(c)]
    router.write_config()
    await router.wait_for(lambda: "c" in router.backends and router.backends["c"].serving, timeout=2, what="c added")
    _, last = await collect(router.stub, request(max_tokens=2))
    assert last.tier == "c" and "a" not in router.backends
