"""Typed results: dataclasses, never raw protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the serving engine's tokenizer counted them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece. `finish_reason` is set on the last chunk only ("stop", "length", ...)."""

    text: str
    generated_tokens: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    tier: str = ""
    model: str = ""
    quantization: str = ""
    routing_reason: str = ""
    # Tiers the router tried before one answered (last chunk only).
    attempts: int = 0
    # The accuracy predictor that ranked the tiers (last chunk only; "" = the profiled accuracies did).
    predictor: str = ""
    # The address of the tier's replica that served it (last chunk only).
    replica: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer: the text, why it ended, its token usage and the tier that served it."""

    text: str
    finish_reason: str
    usage: Usage
    tier: str
    model: str = ""
    quantization: str = ""
    routing_reason: str = ""
    attempts: int = 0
    predictor: str = ""
    replica: str = ""


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier as the router sees it (`health` and `breaker` are enum names without prefix)."""

    name: str
    model: str
    quantization: str
    address: str
    health: str
    max_model_len: int
    breaker: str = ""
    in_flight: int = 0
    running_requests: int = 0
    waiting_requests: int = 0
    kv_cache_usage: float = 0.0
    profile: dict = field(default_factory=dict)
    # Each replica: address, health, breaker, in_flight, running/waiting requests, kv_cache_usage, and live
    # ttft_ms / decode_tokens_per_second (None until measured). The fields above are their aggregates.
    replicas: list[dict] = field(default_factory=list)
    # The live estimates predicted latency blends with the profile (None until measured).
    live: dict = field(default_factory=dict)


class TierList(list):
    """What `tiers()` returns: the router's `Tier`s, as a plain list (indexing, iteration, `==` with a list
    all as before), plus `predictor`, the id of the accuracy predictor in force ("" when the tiers'
    profiled accuracy ranks them), from the same ListTiers answer."""

    def __init__(self, tiers=(), predictor: str = "") -> None:
        super().__init__(tiers)
        self.predictor = predictor

    def __repr__(self) -> str:
        return f"TierList({list.__repr__(self)}, predictor={self.predictor!r})"
