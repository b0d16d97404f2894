"""choose_tier, stage by stage, plus the classifier and the token bound it relies on."""

from __future__ import annotations

import pytest

from router.choose import BEST, DIVERTED, FALLBACK, NEXT_BEST, PINNED, LiveState, RequestView, choose_tier, predict_ms
from router.classify import Signals, classify
from router.errors import RouteError
from mesh.config import PolicyConfig, TierSpec
from router.profiles import TierProfile
from router.tokens import TokenCounter, upper_bound

POLICY = PolicyConfig()
TIERS = [
    TierSpec(name="small", address="x:1", max_model_len=512),
    TierSpec(name="mid", address="x:2", max_model_len=4096),
    TierSpec(name="big", address="x:3", max_model_len=8192),
]
TIERS_BY_NAME = {t.name: t for t in TIERS}
PROFILES = {
    "small": TierProfile(ttft_ms_p50=10, decode_tps_c1=200, accuracy=0.40, cost_per_million_tokens=0.2),
    "mid": TierProfile(ttft_ms_p50=30, decode_tps_c1=80, accuracy=0.60, cost_per_million_tokens=1.0),
    "big": TierProfile(ttft_ms_p50=80, decode_tps_c1=20, accuracy=0.80, cost_per_million_tokens=3.0),
}


def live(**overrides: LiveState) -> dict[str, LiveState]:
    return {t.name: overrides.get(t.name, LiveState(serving=True)) for t in TIERS}


def view(prompt_tokens: int = 50, max_tokens: int = 100, **kw) -> RequestView:
    return RequestView(max_tokens=max_tokens, prompt_tokens={t.name: prompt_tokens for t in TIERS}, **kw)


def names(candidates) -> list[str]:
    return [c.name for c in candidates]


def test_too_long_prompt_skips_small_context_tier():
    """A prompt whose tokens + max_tokens exceed a tier's max_model_len never reaches that tier."""
    fits_everywhere = choose_tier(view(100, 100, min_accuracy=0.0, latency_budget_ms=60_000), TIERS, PROFILES, live(), POLICY)
    assert fits_everywhere[0].name == "small"
    too_long = choose_tier(view(1000, 100, min_accuracy=0.0, latency_budget_ms=60_000), TIERS, PROFILES, live(), POLICY)
    assert "small" not in names(too_long)
    assert too_long[0].name == "mid"


def test_prompt_too_long_for_every_tier_is_invalid_argument():
    """When no tier's context holds the request, the error is the caller's (INVALID_ARGUMENT)."""
    with pytest.raises(RouteError) as e:
        choose_tier(view(9000, 100), TIERS, PROFILES, live(), POLICY)
    assert (e.value.code, e.value.reason) == ("INVALID_ARGUMENT", "PROMPT_TOO_LONG")


def test_unhealthy_and_breaker_open_tiers_are_not_eligible():
    """Tiers not SERVING, not heard from, or with an open breaker are left out."""
    state = live(small=LiveState(serving=False), mid=LiveState(serving=True, breaker_allows=False))
    assert names(choose_tier(view(min_accuracy=0.0), TIERS, PROFILES, state, POLICY)) == ["big"]
    with pytest.raises(RouteError) as e:
        choose_tier(view(), TIERS, PROFILES, {t.name: LiveState(serving=None) for t in TIERS}, POLICY)
    assert e.value.code == "UNAVAILABLE"


def test_full_tiers_give_resource_exhausted():
    """A tier at its stream limit is skipped; when all are, the call gets RESOURCE_EXHAUSTED."""
    full = {t.name: LiveState(serving=True, in_flight=t.max_in_flight) for t in TIERS}
    with pytest.raises(RouteError) as e:
        choose_tier(view(), TIERS, PROFILES, full, POLICY)
    assert e.value.code == "RESOURCE_EXHAUSTED"


def test_pinned_tier_wins_when_eligible_else_clear_error():
    """routing.tier picks that tier even if policy prefers another; unknown or down pinned tiers fail clearly."""
    assert choose_tier(view(pinned="big", min_accuracy=0.0), TIERS, PROFILES, live(), POLICY)[0].reason == PINNED
    assert names(choose_tier(view(pinned="big"), TIERS, PROFILES, live(), POLICY)) == ["big"]
    with pytest.raises(RouteError) as e:
        choose_tier(view(pinned="nope"), TIERS, PROFILES, live(), POLICY)
    assert e.value.code == "INVALID_ARGUMENT" and "small" in str(e.value)
    with pytest.raises(RouteError) as e:
        choose_tier(view(pinned="big"), TIERS, PROFILES, live(big=LiveState(serving=False)), POLICY)
    assert (e.value.code, e.value.reason) == ("UNAVAILABLE", "TIER_UNAVAILABLE")
    with pytest.raises(RouteError) as e:
        choose_tier(view(1000, pinned="small"), TIERS, PROFILES, live(), POLICY)
    assert e.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("budget_ms", "floor", "expected"),
    [
        (60_000, 0.0, "small"),  # everything qualifies: the cheapest wins
        (60_000, 0.5, "mid"),  # accuracy floor rules out small
        (60_000, 0.7, "big"),  # only big is accurate enough
        (2_000, 0.5, "mid"),  # big is too slow for 2 s (80 ms + 100 tok / 20 tok/s = 5.08 s), mid fits (1.28 s)
    ],
)
def test_budget_and_floor_pick_cheapest_tier_meeting_both(budget_ms, floor, expected):
    """Latency budget and accuracy floor filter; utility then prefers the cheapest that meets both."""
    ranked = choose_tier(view(latency_budget_ms=budget_ms, min_accuracy=floor), TIERS, PROFILES, live(), POLICY)
    assert ranked[0].name == expected
    assert ranked[0].reason == BEST


def test_other_candidates_follow_for_failover():
    """After the best tier come the other tiers meeting the constraints, then the rest by accuracy."""
    ranked = choose_tier(view(latency_budget_ms=2_000, min_accuracy=0.5), TIERS, PROFILES, live(), POLICY)
    assert [(c.name, c.reason) for c in ranked] == [("mid", BEST), ("big", FALLBACK), ("small", FALLBACK)]
    ranked = choose_tier(view(latency_budget_ms=60_000, min_accuracy=0.0), TIERS, PROFILES, live(), POLICY)
    assert [c.reason for c in ranked] == [BEST, NEXT_BEST, NEXT_BEST]


def test_queue_depth_raises_predicted_latency():
    """Waiting and running requests on a tier scale its predicted latency, which can push it out of budget."""
    idle = predict_ms(PROFILES["mid"], LiveState(serving=True), view(), TIERS_BY_NAME["mid"])
    busy = predict_ms(PROFILES["mid"], LiveState(serving=True, running=4, waiting=10), view(), TIERS_BY_NAME["mid"])
    assert busy > idle
    state = live(mid=LiveState(serving=True, running=4, waiting=10))
    ranked = choose_tier(view(latency_budget_ms=2_000, min_accuracy=0.5), TIERS, PROFILES, state, POLICY)
    assert ranked[0].reason == FALLBACK  # nothing meets 2 s any more


def test_nothing_fits_falls_back_to_most_accurate():
    """When no tier meets budget and floor, the most accurate eligible tier serves, marked as a fallback."""
    ranked = choose_tier(view(latency_budget_ms=10, min_accuracy=0.95), TIERS, PROFILES, live(), POLICY)
    assert [c.name for c in ranked] == ["big", "mid", "small"]
    assert ranked[0].reason == FALLBACK


def test_kv_pressure_diverts_to_tier_with_headroom():
    """A tier past the KV threshold gets no new work while another eligible tier has headroom."""
    state = live(small=LiveState(serving=True, kv_cache_usage=0.95))
    ranked = choose_tier(view(min_accuracy=0.0, latency_budget_ms=60_000), TIERS, PROFILES, state, POLICY)
    assert ranked[0].name == "mid" and ranked[0].reason == DIVERTED
    assert ranked[-1].name == "small"


def test_kv_pressure_everywhere_changes_nothing():
    """When every tier is past the threshold, the policy order stands."""
    state = {t.name: LiveState(serving=True, kv_cache_usage=0.95) for t in TIERS}
    ranked = choose_tier(view(min_accuracy=0.0, latency_budget_ms=60_000), TIERS, PROFILES, state, POLICY)
    assert ranked[0].name == "small" and ranked[0].reason == BEST


def test_hints_absent_use_class_defaults():
    """Without min_accuracy, the complexity class sets the floor: precise needs more than fast."""
    fast = choose_tier(view(complexity="fast"), TIERS, PROFILES, live(), POLICY)
    precise = choose_tier(view(complexity="precise"), TIERS, PROFILES, live(), POLICY)
    assert fast[0].name == "small"
    assert PROFILES[precise[0].name].accuracy >= POLICY.classes["precise"].min_accuracy


def test_unroutable_profile_is_skipped_unless_pinned():
    """A tier its profile marks not routable serves only pinned calls."""
    profiles = {**PROFILES, "small": PROFILES["small"].model_copy(update={"routable": False})}
    assert "small" not in names(choose_tier(view(min_accuracy=0.0), TIERS, profiles, live(), POLICY))
    assert names(choose_tier(view(pinned="small"), TIERS, profiles, live(), POLICY)) == ["small"]


def test_classifier_reads_code_reasoning_and_length():
    """Plain chit-chat is fast; code or reasoning with greedy decoding is precise; long answers raise the class."""
    assert classify(Signals("hi, how are you", 15, 32, 0.8)) == "fast"
    assert classify(Signals("```python\ndef f(x):\n    return x\n```\nWhy does this fail? Explain step by step.", 80, 256, 0.0)) == "precise"
    assert classify(Signals("tell me a story", 15, 1024, 0.8)) == "balanced"


def test_byte_bound_is_an_upper_bound_of_real_token_count(bundled_model):
    """The byte bound never undercounts the bundled tokenizer, so skipping the tokenizer is safe."""
    tok = bundled_model / "tokenizer.json"
    counter = TokenCounter()
    for text in ("hello", "Ünïcödé ✓ 日本語 " * 20, "def f(x):\n    return x ** 2\n" * 30):
        exact = counter.count(str(tok), text, [])
        assert exact <= upper_bound(text, [])
        assert exact < upper_bound(text, []) or len(text) < 10
        msgs = [text, "reply"]
        assert counter.count(str(tok), "", msgs) <= upper_bound("", msgs)


def test_no_max_tokens_needs_only_one_token_of_room_and_predicts_with_the_room_left():
    """With no max_tokens a prompt that leaves 100 tokens of a tier's context is eligible (the tier then
    generates min(256, room) tokens), and the latency prediction uses those 100 tokens, not 256."""
    small = TIERS_BY_NAME["small"]
    request = RequestView(max_tokens=None, prompt_tokens={"small": small.max_model_len - 100})
    assert names(choose_tier(request, [small], PROFILES, live(), POLICY)) == ["small"]
    predicted = predict_ms(PROFILES["small"], LiveState(serving=True), request, small)
    hundred = predict_ms(PROFILES["small"], LiveState(serving=True), RequestView(max_tokens=100, prompt_tokens=request.prompt_tokens), small)
    assert predicted == hundred
    with pytest.raises(RouteError) as e:
        choose_tier(RequestView(max_tokens=None, prompt_tokens={"small": small.max_model_len}), [small], PROFILES, live(), POLICY)
    assert e.value.reason == "PROMPT_TOO_LONG"
