"""The learned accuracy predictor in the router: it steers choose_tier per request, clients see which one is in
force, it reloads with the profiles, and without one the policy is what it was."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from mesh.config import PolicyConfig, TierSpec
from profiler.outcomes import examples
from profiler.train import train_predictor
from qarr.v1 import router_service_pb2 as pb
from router.choose import LiveState, RequestView, choose_tier
from router.predictor import AccuracyPredictor, dump_predictor, load_predictor
from router.profiles import TierProfile, load_profiles
from tests.quality import synthetic
from tests.router.routing_helpers import FakeTier, Router, collect, profile, request, tier_entry

# Same speed and cost: only the accuracy can tell the tiers apart.
PROFILES = {"a": profile(0.5, cost=1.0), "b": profile(0.5, cost=1.0)}


def trained(noise: float = 0.1):
    train, unseen = synthetic.split(seed=3)
    data = train_predictor(examples(synthetic.outcomes(train, noise=noise, seed=3)), ["a", "b"],
                           eval_set="synthetic.jsonl", eval_set_sha256=synthetic.SHA)
    return data, unseen


def write_predictor(router: Router, data) -> str:
    path = router.profiles_path.parent / "predictor.json"
    dump_predictor(data, path)
    router.profiles_data["predictor"] = "predictor.json"
    router.write_profiles()
    return load_predictor(path).id


async def test_learned_predictor_sends_unseen_items_to_the_tier_that_answers_them(started, tmp_path):
    """Trained on noisy synthetic outcomes (a answers arithmetic, b capitals), a real router over fake tiers
    sends at least 90 % of unseen items of each kind to the right tier and says which predictor decided."""
    data, unseen = trained()
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    router = Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES)
    predictor_id = write_predictor(router, data)
    await started(router)
    await router.wait_serving("a", "b")

    served: Counter = Counter()
    for kind, prompt in unseen:
        _, last = await collect(router.stub, request(prompt, max_tokens=2))
        served[kind, last.tier] += 1
        assert last.predictor == predictor_id
    for kind, right in (("arithmetic", "a"), ("capitals", "b")):
        total = served[kind, "a"] + served[kind, "b"]
        print(f"\n{kind}: {served[kind, right]}/{total} to {right}")
        assert served[kind, right] >= 0.9 * total
    listed = await router.stub.ListTiers(pb.ListTiersRequest(), timeout=5)
    assert listed.predictor == predictor_id


async def test_without_a_predictor_clients_see_none_and_pinned_calls_name_none(started, tmp_path):
    """No predictor: the last message and ListTiers name none; with one, a pinned call names none either."""
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES))
    await router.wait_serving("a", "b")
    _, last = await collect(router.stub, request(max_tokens=2))
    assert last.predictor == "" and last.routing_reason
    assert (await router.stub.ListTiers(pb.ListTiersRequest(), timeout=5)).predictor == ""

    data, _ = trained()
    predictor_id = write_predictor(router, data)
    await router.wait_for(lambda: router.server.router.profiles.accuracy_predictor is not None, timeout=3,
                          what="predictor loaded")
    _, last = await collect(router.stub, request(max_tokens=2, tier="a"))
    assert (last.tier, last.routing_reason, last.predictor) == ("a", "pinned", "")
    _, last = await collect(router.stub, request(max_tokens=2))
    assert last.predictor == predictor_id


async def test_predictor_reloads_with_profiles_and_a_broken_one_keeps_the_last_good(started, tmp_path):
    """A new predictor file applies live; a corrupt one, or one trained on another eval set, is refused
    and the last good predictor stays in force."""
    a = await started(FakeTier("a"))
    router = Router(tmp_path, [tier_entry(a)], {"a": profile(0.5)})
    data, _ = trained()
    first = write_predictor(router, data)
    await started(router)
    servicer, reloader = router.server.router, router.server.reloader
    assert servicer.profiles.accuracy_predictor.id == first

    retrained = data.model_copy(update={"bias": [v + 0.5 for v in data.bias]})
    second = write_predictor(router, retrained)
    await router.wait_for(lambda: servicer.profiles.accuracy_predictor.id == second, timeout=3, what="new predictor")

    path = router.profiles_path.parent / "predictor.json"
    for broken in ("{not json", json.dumps({**retrained.model_dump(), "bias": [0.0]}),
                   json.dumps({**retrained.model_dump(), "features": 99})):
        rejected = reloader.rejected
        path.write_text(broken)
        await router.wait_for(lambda: reloader.rejected > rejected, timeout=3, what="broken predictor seen")
        assert servicer.profiles.accuracy_predictor.id == second

    rejected = reloader.rejected
    dump_predictor(retrained, path)
    router.profiles_data["measured"]["eval_set"] = "other.jsonl sha256:" + "7" * 16
    router.write_profiles()
    await router.wait_for(lambda: reloader.rejected > rejected, timeout=3, what="mismatched eval set seen")
    assert servicer.profiles.accuracy_predictor.id == second
    assert (await router.stub.ListTiers(pb.ListTiersRequest(), timeout=5)).predictor == second


def test_profiles_refuse_a_predictor_of_another_eval_set(tmp_path):
    """The predictor is versioned with the eval set's hash: the profiles file loads only a matching one."""
    data, _ = trained()
    dump_predictor(data, tmp_path / "p.json")
    path = tmp_path / "profiles.yaml"
    path.write_text(f"version: 1\nmeasured: {{eval_set: 'synthetic.jsonl sha256:{synthetic.SHA[:16]}'}}\n"
                    "tiers: {}\npredictor: p.json\n")
    assert load_profiles(path).accuracy_predictor.eval_set_sha256 == synthetic.SHA
    path.write_text("version: 1\nmeasured: {eval_set: 'golden.jsonl sha256:0123456789abcdef'}\ntiers: {}\npredictor: p.json\n")
    with pytest.raises(ValueError, match="trained on eval set"):
        load_profiles(path)


# ----------------------------------------------------------------------------- choose_tier, pure

TIERS = [TierSpec(name=n, address=f"x:{i}", max_model_len=4096) for i, n in enumerate(("s", "m", "l"))]
tier_profile = st.builds(
    TierProfile,
    ttft_ms_p50=st.floats(1, 2000), decode_tps_c1=st.floats(1, 300), accuracy=st.floats(0, 1),
    cost_per_million_tokens=st.floats(0, 5), decode_tps_cn=st.floats(0, 2000), prompt_tps=st.floats(0, 5000),
    routable=st.booleans(),
)
views = st.builds(
    RequestView,
    max_tokens=st.integers(1, 1024), prompt_tokens=st.just({t.name: 40 for t in TIERS}),
    latency_budget_ms=st.sampled_from([0.0, 500.0, 5000.0, 60000.0]),
    min_accuracy=st.one_of(st.none(), st.floats(0, 1)), complexity=st.sampled_from(["fast", "balanced", "precise"]),
)


@settings(max_examples=300, deadline=None)
@given(view=views, profiles=st.fixed_dictionaries({t.name: tier_profile for t in TIERS}),
       waiting=st.lists(st.integers(0, 5), min_size=3, max_size=3))
def test_without_predictions_the_choice_is_the_profiled_one(view, profiles, waiting):
    """No predicted accuracy (None, or tiers missing from it) ranks exactly as the profiled accuracies do."""
    live = {t.name: LiveState(serving=True, waiting=w) for t, w in zip(TIERS, waiting)}
    if not any(p.routable for p in profiles.values()):
        return
    policy = PolicyConfig()
    baseline = choose_tier(view, TIERS, profiles, live, policy)
    assert choose_tier(dataclasses.replace(view, accuracy={}), TIERS, profiles, live, policy) == baseline
    constants = {name: p.accuracy for name, p in profiles.items()}
    assert choose_tier(dataclasses.replace(view, accuracy=constants), TIERS, profiles, live, policy) == baseline


def test_predicted_accuracy_replaces_the_profiled_one_in_floor_and_utility():
    """A request the predictor says only the slow tier answers goes there; one it says the fast tier
    answers as well stays on the fast tier, under the same profiles and policy."""
    profiles = {
        "s": TierProfile(ttft_ms_p50=10, decode_tps_c1=200, accuracy=0.4, cost_per_million_tokens=0.2),
        "m": TierProfile(ttft_ms_p50=30, decode_tps_c1=80, accuracy=0.6, cost_per_million_tokens=1.0),
        "l": TierProfile(ttft_ms_p50=80, decode_tps_c1=20, accuracy=0.8, cost_per_million_tokens=3.0),
    }
    live = {t.name: LiveState(serving=True) for t in TIERS}
    base = RequestView(max_tokens=50, prompt_tokens={t.name: 40 for t in TIERS}, min_accuracy=0.5, latency_budget_ms=60_000)
    assert choose_tier(base, TIERS, profiles, live, PolicyConfig())[0].name == "m"  # s is below the floor
    easy = dataclasses.replace(base, accuracy={"s": 0.95, "m": 0.96, "l": 0.97})
    assert choose_tier(easy, TIERS, profiles, live, PolicyConfig())[0].name == "s"
    hard = dataclasses.replace(base, accuracy={"s": 0.05, "m": 0.1, "l": 0.9})
    assert choose_tier(hard, TIERS, profiles, live, PolicyConfig())[0].name == "l"
    hopeless = dataclasses.replace(base, accuracy={"s": 0.01, "m": 0.3, "l": 0.2})
    ranked = choose_tier(hopeless, TIERS, profiles, live, PolicyConfig())
    assert [c.name for c in ranked] == ["m", "l", "s"] and ranked[0].reason == "fallback_most_accurate"


def test_predictor_file_is_checked_when_loaded(tmp_path):
    """Wrong feature version, mismatched lengths or non-finite weights: a clear error naming the file."""
    data, _ = trained()
    path = tmp_path / "p.json"
    for bad, match in (({"features": 2}, "feature version"), ({"bias": [0.0]}, "bias has 1 values"),
                       ({"weights": {"u:x": [1.0]}}, "has 1 values"), ({"format": "x"}, "not an accuracy predictor")):
        path.write_text(json.dumps({**data.model_dump(), **bad}))
        with pytest.raises(ValueError, match=match):
            load_predictor(path)
    path.write_text(json.dumps(data.model_dump()).replace(str(data.bias[0]), "NaN", 1))
    with pytest.raises(ValueError, match=str(path)):
        load_predictor(path)


def test_prediction_is_deterministic_and_bounded_for_long_prompts():
    """Same text, same probabilities in any process (no salted hashing); a 100 KiB prompt is cut to a
    bounded head and tail, and every probability is in (0, 1)."""
    data, _ = trained()
    p = AccuracyPredictor(data)
    q = AccuracyPredictor(data.model_copy())
    text = "What is the capital of Chile?"
    assert p.predict(text) == q.predict(text)
    long = "filler words " * 8000 + text
    probs = p.predict(long)
    assert set(probs) == {"a", "b"} and all(0 < v < 1 for v in probs.values())
    assert probs["b"] > probs["a"]  # the question at the end is still read
