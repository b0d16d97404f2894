"""choose_tier: a pure function from a request and snapshots of the tiers to ranked candidates.

No I/O and no clock: the relay takes snapshots (health, breaker, load, in-flight
counts, prompt token counts) and passes them in. Four stages, in order:

1. eligibility  - healthy, breaker lets traffic through, room for one more stream,
                  prompt tokens + max_tokens fit the context. A pinned tier wins when eligible.
2. constraints  - predicted latency within the budget, accuracy at least the floor.
3. utility      - rank what meets both by accuracy - latency - cost (weights from config);
                  when nothing meets them, fall back to the most accurate eligible tier.
   "Accuracy" is the request's predicted P(correct) on the tier when the caller passes one
   (RequestView.accuracy, from router/predictor.py), else the tier's profiled accuracy.
4. live pressure - a tier whose KV cache is past the threshold moves behind the tiers with headroom.

Every candidate carries the reason it is where it is; the relay tries them in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mesh.config import PolicyConfig, TierSpec, default_max_tokens
from router.errors import InvalidRequest, NoTierAvailable, Overloaded, TiersBusy, UnknownTier, clip
from router.profiles import TierProfile

PINNED = "pinned"
BEST = "best_utility"
NEXT_BEST = "next_best_utility"
FALLBACK = "fallback_most_accurate"
DIVERTED = "kv_pressure_diverted"


@dataclass(frozen=True, slots=True)
class RequestView:
    """What choose_tier needs from a request."""

    max_tokens: int | None  # None: the caller set none; the tier then uses default_max_tokens
    # Per tier name, prompt tokens the router counted with the tier's tokenizer (the caller's text only:
    # at most what the tier counts). Absent: not counted (the byte bound proved it fits, or no tokenizer).
    prompt_tokens: Mapping[str, int]
    prompt_bytes: int = 0  # UTF-8 bytes of the caller's text: the estimate where no count exists
    pinned: str = ""
    latency_budget_ms: float = 0.0  # 0: the class default
    min_accuracy: float | None = None  # None: the class default
    complexity: str = "balanced"  # fast | balanced | precise (router/classify.py)
    # Predicted P(correct) per tier name for this request (router/predictor.py). None, or a tier
    # missing from it: the tier's profiled (constant) accuracy.
    accuracy: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class LiveState:
    """A tier's state at the moment of the choice."""

    serving: bool | None  # None: not heard from yet
    breaker_allows: bool = True
    in_flight: int = 0
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    # Live estimates from the streams the router relayed (router/live.py); None: too few yet.
    ttft_ms: float | None = None
    tpot_ms: float | None = None  # time per output token after the first
    freshness: float = 1.0  # 1: just measured, towards 0 as the estimates age (scales their weight)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    reason: str
    predicted_ms: float | None = None


def choose_tier(
    request: RequestView,
    tiers: Sequence[TierSpec],
    profiles: Mapping[str, TierProfile],
    live_state: Mapping[str, LiveState],
    policy: PolicyConfig,
) -> list[Candidate]:
    """Candidates best first; raises a RouteError (router/errors.py) when none is eligible."""
    if request.pinned:
        return [_pinned(request, tiers, live_state)]
    eligible = _eligible(request, tiers, profiles, live_state)
    budget, floor = _needs(request, policy)
    predicted = {
        t.name: predict_ms(profiles.get(t.name), live_state[t.name], request, t, policy.live_weight) for t in eligible
    }
    meeting = [
        t for t in eligible
        if predicted[t.name] is not None and predicted[t.name] <= budget
        and _accuracy(profiles, t.name, request.accuracy) >= floor
    ]
    ranked = _by_utility(meeting, profiles, predicted, policy, request.accuracy)
    met = {t.name for t in meeting}
    rest = sorted((t for t in eligible if t.name not in met), key=lambda t: -_accuracy(profiles, t.name, request.accuracy))
    candidates = [Candidate(t.name, BEST if i == 0 else NEXT_BEST, predicted[t.name]) for i, t in enumerate(ranked)]
    candidates += [Candidate(t.name, FALLBACK, predicted[t.name]) for t in rest]
    return _divert_pressure(candidates, live_state, policy.kv_pressure_threshold)


UNAVAILABLE, BUSY, TOO_LONG, MAYBE_TOO_LONG = "unavailable", "busy", "too_long", "maybe_too_long"
BYTES_PER_TOKEN = 4  # a typical BPE rate, for estimates only (never for refusing a request)


def _refusal(request: RequestView, tier: TierSpec, live: LiveState | None) -> tuple[str, str] | None:
    """(kind, why) when the tier cannot take this request now, else None."""
    if live is None or not live.serving:
        return UNAVAILABLE, "not serving"
    if not live.breaker_allows:
        return UNAVAILABLE, "circuit breaker open"
    if live.in_flight >= tier.max_in_flight:
        return BUSY, f"at its limit of {tier.max_in_flight} streams"
    # With no max_tokens the tier generates into whatever room is left, so one token of room is enough.
    room = request.max_tokens if request.max_tokens is not None else 1
    counted = request.prompt_tokens.get(tier.name)
    if counted is not None and counted + room > tier.max_model_len:
        return TOO_LONG, f"prompt ({counted} tokens) + max_tokens needs {counted + room} > max_model_len {tier.max_model_len}"
    if counted is None and request.prompt_bytes + room > tier.max_model_len:
        # No count (no tokenizer): the byte bound cannot prove it fits. Prefer tiers where it surely fits.
        return MAYBE_TOO_LONG, f"may not fit max_model_len {tier.max_model_len} (no tokenizer to count)"
    return None


def _pinned(request: RequestView, tiers: Sequence[TierSpec], live_state: Mapping[str, LiveState]) -> Candidate:
    by_name = {t.name: t for t in tiers}
    tier = by_name.get(request.pinned)
    if tier is None:
        raise UnknownTier(f"routing.tier {clip(request.pinned)} is not a known tier; known tiers: {list(by_name)}")
    refusal = _refusal(request, tier, live_state.get(tier.name))
    if refusal and refusal[0] != MAYBE_TOO_LONG:  # pinned: where the router cannot count, the tier decides
        kind, why = refusal
        message = f"pinned tier {tier.name} cannot take this request: {why}"
        if kind == TOO_LONG:
            raise InvalidRequest(message, "PROMPT_TOO_LONG")
        if kind == BUSY:
            raise Overloaded(message, "TIER_FULL")
        raise NoTierAvailable(message, "TIER_UNAVAILABLE")
    return Candidate(tier.name, PINNED)


def _eligible(request, tiers, profiles, live_state) -> list[TierSpec]:
    eligible, refusals = [], {}
    for tier in tiers:
        profile = profiles.get(tier.name)
        if profile is not None and not profile.routable:
            refusals[tier.name] = (UNAVAILABLE, f"not routable ({profile.not_routable_reason or 'profiler'})")
            continue
        refusal = _refusal(request, tier, live_state.get(tier.name))
        if refusal:
            refusals[tier.name] = refusal
        else:
            eligible.append(tier)
    if eligible:
        return eligible
    maybe = [t for t in tiers if refusals.get(t.name, ("",))[0] == MAYBE_TOO_LONG]
    if maybe:
        return maybe  # no tier surely fits; those the router could not count decide for themselves
    kinds = {kind for kind, _ in refusals.values()}
    why = "; ".join(f"{name}: {w}" for name, (_, w) in refusals.items())
    if kinds == {TOO_LONG}:
        raise InvalidRequest(f"the prompt does not fit any tier's context ({why})", "PROMPT_TOO_LONG")
    if BUSY in kinds:
        raise TiersBusy(f"every tier that could serve this is busy ({why})")
    raise NoTierAvailable(f"no tier can serve now ({why})")


def _needs(request: RequestView, policy: PolicyConfig) -> tuple[float, float]:
    """(latency budget ms, accuracy floor): the caller's hints, else the class defaults."""
    defaults = policy.classes.get(request.complexity, policy.classes["balanced"])
    budget = request.latency_budget_ms or defaults.latency_budget_ms
    floor = defaults.min_accuracy if request.min_accuracy is None else request.min_accuracy
    return budget, floor


def predict_ms(
    profile: TierProfile | None, live: LiveState, request: RequestView, tier: TierSpec, live_weight: float = 0.0
) -> float | None:
    """TTFT (waiting requests queue ahead) + prefill + max_tokens at the per-stream decode rate
    with this request added to those running. None without a profile.

    With `live_weight` > 0 and live estimates, TTFT and the time per token are blends:
    (1 - w) x the profile's figure + w x the live one, w = live_weight x the estimates' freshness
    (the live figures were measured under the load of the moment, so they are not scaled by it again)."""
    if profile is None:
        return None
    prompt = max(request.prompt_tokens.get(tier.name, 0), request.prompt_bytes // BYTES_PER_TOKEN)
    max_tokens = request.max_tokens if request.max_tokens is not None else default_max_tokens(prompt, tier.max_model_len)
    streams = max(live.running, live.in_flight) + 1
    per_stream = profile.decode_tps_c1 / streams
    if profile.decode_tps_cn > 0:
        per_stream = min(profile.decode_tps_c1, profile.decode_tps_cn / streams)
    prefill = prompt / profile.prompt_tps * 1000 if profile.prompt_tps > 0 else 0.0
    ttft = profile.ttft_ms_p50 * (1 + live.waiting) + prefill
    per_token = 1000 / per_stream
    w = live_weight * live.freshness
    if w > 0:
        if live.ttft_ms is not None:
            ttft = (1 - w) * ttft + w * live.ttft_ms
        if live.tpot_ms is not None:
            per_token = (1 - w) * per_token + w * live.tpot_ms
    return ttft + max_tokens * per_token


def _by_utility(tiers, profiles, predicted, policy: PolicyConfig, accuracy: Mapping[str, float] | None) -> list[TierSpec]:
    def utility(t: TierSpec) -> float:
        p = profiles[t.name]
        return (
            policy.accuracy_weight * _accuracy(profiles, t.name, accuracy)
            - policy.latency_weight * predicted[t.name] / 1000
            - policy.cost_weight * p.cost_per_million_tokens
        )

    return sorted(tiers, key=utility, reverse=True)


def _accuracy(profiles, name: str, predicted: Mapping[str, float] | None = None) -> float:
    """The request's predicted accuracy on the tier when there is one, else the profiled one (-1: unknown)."""
    if predicted is not None:
        p = predicted.get(name)
        if p is not None:
            return p
    profile = profiles.get(name)
    return profile.accuracy if profile is not None else -1.0


def _divert_pressure(candidates: list[Candidate], live_state, threshold: float) -> list[Candidate]:
    """Tiers past the KV threshold go last, as long as some candidate has headroom."""
    calm = [c for c in candidates if live_state[c.name].kv_cache_usage <= threshold]
    if not calm or len(calm) == len(candidates):
        return candidates
    pressed = [c for c in candidates if live_state[c.name].kv_cache_usage > threshold]
    if calm[0] is not candidates[0]:
        calm[0] = Candidate(calm[0].name, DIVERTED, calm[0].predicted_ms)
    return calm + pressed
