"""Between SDK types and the qarr.v1 messages (the only module that touches both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clients.errors import ServerError
from clients.types import Chunk, Completion, Tier, TierList, Usage
from qarr.v1 import common_pb2, router_service_pb2 as pb

FINISH = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_CANCELLED: "cancelled",
    common_pb2.FINISH_REASON_ERROR: "error",
}


def build_request(
    prompt: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    tier: str = "",
    latency_budget_ms: int = 0,
    min_accuracy: float | None = None,
    request_id: str = "",
) -> pb.GenerateRequest:
    if (prompt is None) == (messages is None):
        raise ValueError("pass exactly one of prompt and messages")
    sampling = common_pb2.SamplingParams(stop=list(stop))
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p), ("top_k", top_k), ("seed", seed)):
        if value is not None:
            setattr(sampling, name, value)
    routing = pb.RoutingHints(tier=tier, latency_budget_ms=latency_budget_ms)
    if min_accuracy is not None:
        routing.min_accuracy = min_accuracy
    return pb.GenerateRequest(
        prompt=prompt or "",
        messages=[common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages or ()],
        sampling=sampling,
        routing=routing,
        request_id=request_id,
    )


def to_chunk(msg: pb.GenerateResponse) -> Chunk:
    if not msg.finish_reason:
        return Chunk(text=msg.text, generated_tokens=msg.generated_tokens)
    return Chunk(
        text=msg.text,
        generated_tokens=msg.generated_tokens,
        finish_reason=FINISH.get(msg.finish_reason, "unspecified"),
        usage=Usage(msg.usage.prompt_tokens, msg.usage.completion_tokens),
        tier=msg.tier,
        model=msg.model,
        quantization=msg.quantization,
        routing_reason=msg.routing_reason,
        attempts=msg.attempts,
        predictor=msg.predictor,
        replica=msg.replica,
    )


def to_completion(chunks: Sequence[Chunk]) -> Completion:
    if not chunks or chunks[-1].finish_reason is None:
        raise ServerError("the stream ended without its closing message", reason="TRUNCATED_STREAM")
    last = chunks[-1]
    return Completion(
        text="".join(c.text for c in chunks),
        finish_reason=last.finish_reason or "unspecified",
        usage=last.usage or Usage(),
        tier=last.tier,
        model=last.model,
        quantization=last.quantization,
        routing_reason=last.routing_reason,
        attempts=last.attempts,
        predictor=last.predictor,
        replica=last.replica,
    )


def to_tier(t: pb.TierInfo) -> Tier:
    return Tier(
        name=t.name,
        model=t.model,
        quantization=t.quantization,
        address=t.address,
        health=pb.HealthState.Name(t.health).removeprefix("HEALTH_STATE_"),
        max_model_len=t.max_model_len,
        breaker=pb.BreakerState.Name(t.breaker).removeprefix("BREAKER_STATE_"),
        in_flight=t.in_flight,
        running_requests=t.load.running_requests,
        waiting_requests=t.load.waiting_requests,
        kv_cache_usage=t.load.kv_cache_usage,
        profile={
            "ttft_ms": t.profile.ttft_ms,
            "decode_tokens_per_second": t.profile.decode_tokens_per_second,
            "accuracy": t.profile.accuracy,
            "cost_per_million_tokens": t.profile.cost_per_million_tokens,
            "routable": t.profile.routable,
        }
        if t.HasField("profile")
        else {},
        replicas=[
            {
                "address": r.address,
                "health": pb.HealthState.Name(r.health).removeprefix("HEALTH_STATE_"),
                "breaker": pb.BreakerState.Name(r.breaker).removeprefix("BREAKER_STATE_"),
                "in_flight": r.in_flight,
                "running_requests": r.load.running_requests,
                "waiting_requests": r.load.waiting_requests,
                "kv_cache_usage": r.load.kv_cache_usage,
                **_live(r.live),
            }
            for r in t.replicas
        ],
        live=_live(t.live),
    )


def _live(live: pb.LiveLatency) -> dict:
    return {
        "ttft_ms": live.ttft_ms if live.HasField("ttft_ms") else None,
        "decode_tokens_per_second": live.decode_tokens_per_second if live.HasField("decode_tokens_per_second") else None,
    }


def to_tier_list(resp: pb.ListTiersResponse) -> TierList:
    return TierList((to_tier(t) for t in resp.tiers), predictor=resp.predictor)
