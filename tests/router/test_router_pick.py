"""The pure replica picker (router/pick.py) and the live latency estimates (router/live.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from router.live import LiveStats
from router.pick import AFFINITY, LEAST_LOAD, OVER_THRESHOLD, ReplicaView, affinity_key, pick_replica, stable_id, weight

ADDRESSES = [f"10.0.0.{i}:50061" for i in range(1, 5)]


def replicas(*loads: int, **fields) -> list[ReplicaView]:
    return [ReplicaView(a, stable_id(a), in_flight=n, **fields) for a, n in zip(ADDRESSES, loads)]


def home(key: int, views: list[ReplicaView]) -> str:
    return max(views, key=lambda r: weight(key, r.id)).address


@given(st.integers(0, 2**64 - 1))
def test_same_key_same_replica_while_loads_are_even(key):
    """A key goes to its rendezvous home, whichever order the replicas come in."""
    views = replicas(3, 3, 3, 3)
    pick = pick_replica(views, key, seed=0)
    assert pick.reason == AFFINITY and pick.address == home(key, views)
    assert pick_replica(list(reversed(views)), key, seed=7).address == pick.address


@given(st.integers(0, 2**64 - 1), st.integers(0, 3))
def test_losing_another_replica_never_moves_a_key(key, lost):
    """Consistent hashing: only keys whose home replica left move; the others stay where they were."""
    views = replicas(0, 0, 0, 0)
    before = pick_replica(views, key, 0).address
    after = pick_replica([v for i, v in enumerate(views) if i != lost], key, 0).address
    assert after == before or before == ADDRESSES[lost]


def test_keys_spread_evenly_over_replicas():
    """1,000 prefixes over four idle replicas: each replica is the home of 20-30 % of them."""
    views = replicas(0, 0, 0, 0)
    homes = Counter(pick_replica(views, affinity_key(f"conversation {i}", (), 64), 0).address for i in range(1000))
    assert set(homes) == set(ADDRESSES)
    assert all(200 <= n <= 300 for n in homes.values()), homes


def test_affinity_home_past_load_threshold_goes_to_least_loaded():
    """The home keeps a key up to max(ratio x least, least + slack) streams; past it the least-loaded replica serves."""
    key = affinity_key("a long shared system prompt", (), 1024)
    views = replicas(0, 0)
    at_home = home(key, views)
    other = next(a for a in ADDRESSES[:2] if a != at_home)

    def with_loads(home_load: int, other_load: int) -> list[ReplicaView]:
        return [ReplicaView(a, stable_id(a), in_flight=home_load if a == at_home else other_load) for a in ADDRESSES[:2]]

    assert pick_replica(with_loads(12, 8), key, 0, ratio=1.25, slack=4) == pick_replica(with_loads(0, 0), key, 0)
    assert pick_replica(with_loads(12, 8), key, 0, ratio=1.25, slack=4).reason == AFFINITY  # 12 <= 8 + 4
    spilled = pick_replica(with_loads(13, 8), key, 0, ratio=1.25, slack=4)
    assert (spilled.address, spilled.reason) == (other, OVER_THRESHOLD)
    assert pick_replica(with_loads(25, 20), key, 0, ratio=1.25, slack=4).reason == AFFINITY  # 25 <= 20 x 1.25
    assert pick_replica(with_loads(26, 20), key, 0, ratio=1.25, slack=4).address == other


def test_engine_queue_and_running_count_as_load():
    """Load is max(this router's streams, the engine's running) + the engine's queue: other routers' work counts."""
    a, b = ADDRESSES[:2]
    views = [ReplicaView(a, stable_id(a), in_flight=1, running=9, waiting=2), ReplicaView(b, stable_id(b), in_flight=4)]
    assert views[0].load == 11 and views[1].load == 4
    assert pick_replica(views, None, 0) == pick_replica(views, None, 1)
    assert pick_replica(views, None, 0).address == b


def test_kv_pressure_moves_new_work_off_a_replica_while_another_has_room():
    """A replica past the KV threshold gets no new work, even for its own prefixes, while another has headroom."""
    key = 12345
    views = replicas(0, 0)
    at_home = home(key, views)
    pressed = [ReplicaView(v.address, v.id, kv_cache_usage=0.95 if v.address == at_home else 0.2) for v in views]
    pick = pick_replica(pressed, key, 0, kv_threshold=0.88)
    assert pick.address != at_home and pick.reason == OVER_THRESHOLD
    all_pressed = [ReplicaView(v.address, v.id, kv_cache_usage=0.95) for v in views]
    assert pick_replica(all_pressed, key, 0, kv_threshold=0.88).address == at_home


@pytest.mark.parametrize("unusable", [
    {"serving": False}, {"serving": None}, {"breaker_allows": False}, {"in_flight": 8, "max_in_flight": 8},
])
def test_replicas_that_cannot_take_a_stream_are_filtered_out(unusable):
    """Down, unknown, breaker-open or full replicas are never picked; with none left the answer is None."""
    a, b = ADDRESSES[:2]
    views = [ReplicaView(a, stable_id(a), **unusable), ReplicaView(b, stable_id(b))]
    for key in (None, *range(20)):
        assert pick_replica(views, key, key or 0).address == b
    assert pick_replica(views[:1], None, 0) is None


def test_replicas_already_tried_are_excluded():
    """A request's failed attempts exclude their replica: the retry goes to another replica of the tier."""
    views = replicas(0, 0, 0)
    first = pick_replica(views, 99, 0)
    second = pick_replica(views, 99, 0, exclude={first.address})
    third = pick_replica(views, 99, 0, exclude={first.address, second.address})
    assert len({first.address, second.address, third.address}) == 3
    assert pick_replica(views, 99, 0, exclude=set(ADDRESSES[:3])) is None


def test_without_affinity_equal_replicas_share_ties_by_seed():
    """No key: least load; equal loads are split by the seed (a request counter), evenly and deterministically."""
    views = replicas(2, 2, 2)
    picks = Counter(pick_replica(views, None, seed).address for seed in range(3000))
    assert all(900 <= n <= 1100 for n in picks.values()), picks
    assert {pick_replica(views, None, s).reason for s in range(10)} == {LEAST_LOAD}
    assert [pick_replica(views, None, s) for s in range(50)] == [pick_replica(views, None, s) for s in range(50)]


def test_affinity_key_is_shared_by_a_conversations_turns():
    """Every turn of a conversation has its key (messages up to the first user turn), another conversation not."""
    system = ("system", "You are terse.")
    turn1 = [system, ("user", "Tell me about otters.")]
    turn3 = [*turn1, ("assistant", "Otters are..."), ("user", "And their diet?"), ("assistant", "Fish."), ("user", "More?")]
    other = [system, ("user", "Tell me about owls.")]
    assert affinity_key("", turn1, 1024) == affinity_key("", turn3, 1024) is not None
    assert affinity_key("", other, 1024) != affinity_key("", turn1, 1024)
    assert affinity_key("", turn1, 0) is None and affinity_key("", [], 64) is None


def test_affinity_key_reads_only_the_first_n_bytes():
    """Prompts that agree on their first N bytes (a long shared system prompt) share a key; N is the setting."""
    shared = "S" * 2000
    assert affinity_key(shared + " question one", (), 1024) == affinity_key(shared + " question two", (), 1024)
    assert affinity_key("abc" + "x" * 100, (), 3) == affinity_key("abcdef", (), 3)
    assert affinity_key("prefix one", (), 1024) != affinity_key("prefix two", (), 1024)
    long_system = [("system", shared), ("user", "q1")]
    assert affinity_key("", long_system, 1024) == affinity_key("", [("system", shared), ("user", "q2")], 1024)


def test_live_stats_follow_a_drift_within_a_few_streams():
    """EWMA: no estimate before min_samples; then a 5x slowdown shows within a few streams (time per token is
    averaged, not rate); estimates fade with a half-life once no stream feeds them."""
    stats = LiveStats(alpha=0.2, min_samples=3, stale_half_life_s=10)
    for _ in range(2):
        stats.record(0.0, 0.010, 9, 0.045)
    assert stats.ttft_estimate_ms is None and stats.tpot_estimate_ms is None
    stats.record(0.0, 0.010, 9, 0.045)
    assert stats.ttft_estimate_ms == pytest.approx(10) and stats.tpot_estimate_ms == pytest.approx(5)
    assert stats.decode_estimate_tps == pytest.approx(200)
    for _ in range(3):
        stats.record(1.0, 0.050, 9, 0.225)  # 5x slower
    assert stats.ttft_estimate_ms == pytest.approx(50 - 40 * 0.8**3)
    assert stats.tpot_estimate_ms == pytest.approx(25 - 20 * 0.8**3)  # over half-way after three streams
    stats.record(1.0, 0.050, 0, 0.0)  # a one-message stream: a TTFT sample, no rate
    assert stats.decode_samples == 6 and stats.ttft_samples == 7
    assert stats.freshness(1.0) == 1.0 and stats.freshness(11.0) == pytest.approx(0.5)


def test_the_replica_that_last_served_a_prefix_keeps_it():
    """`preferred` (the replica that last took the prefix) beats the rendezvous home while it can take the
    request and is within the threshold; down or past the threshold, the usual pick applies."""
    key = 4242
    views = replicas(0, 0, 0)
    at_home = home(key, views)
    elsewhere = next(a for a in ADDRESSES[:3] if a != at_home)
    assert pick_replica(views, key, 0, preferred=elsewhere) == pick_replica(views, key, 0, preferred=elsewhere)
    assert pick_replica(views, key, 0, preferred=elsewhere).address == elsewhere
    down = [ReplicaView(v.address, v.id, serving=v.address != elsewhere) for v in views]
    assert pick_replica(down, key, 0, preferred=elsewhere).address == at_home
    busy = [ReplicaView(v.address, v.id, in_flight=9 if v.address == elsewhere else 0) for v in views]
    assert pick_replica(busy, key, 0, preferred=elsewhere, slack=4).reason == OVER_THRESHOLD


async def test_tier_remembers_a_bounded_number_of_prefixes():
    """A tier remembers where each prefix went, at most affinity_memory prefixes, least recently used first out."""
    from mesh.config import parse_mesh
    from router.backends import Tier

    config = parse_mesh({"tiers": [{"name": "a", "addresses": ADDRESSES[:2]}], "picker": {"affinity_memory": 3}})
    tier = Tier(config.tiers[0], config, clock=lambda: 0.0, changed=asyncio.Event())
    for b in tier.replicas.values():
        b.serving = True
    try:
        for key in range(5):
            backend, pick = tier.pick(key, 0, set())
            assert tier.placed[key] == backend.address and pick.reason == AFFINITY
        assert list(tier.placed) == [2, 3, 4]
        tier.pick(None, 0, set())
        assert list(tier.placed) == [2, 3, 4]
    finally:
        await tier.close()
