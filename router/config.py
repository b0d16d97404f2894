"""Router configuration: a YAML file, read in __main__ (and by the reloader) and passed down."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

from mesh.observability import ObservabilityConfig


class TierSpec(BaseModel):
    name: str
    address: str
    model: str = ""
    quantization: str = ""
    max_model_len: int = Field(2048, gt=0)
    # Price per million tokens (prompt + completion) for the cost metric; unset: the profile's, else none.
    cost_per_million_tokens: float | None = Field(None, ge=0)
    # tokenizer.json for the context-length check; default: <model>/tokenizer.json when it exists.
    tokenizer: str = ""
    # Streams this router keeps open to the tier at most; beyond it the tier is skipped.
    max_in_flight: int = Field(256, gt=0)

    def tokenizer_path(self) -> str:
        if self.tokenizer:
            return self.tokenizer
        default = Path(self.model) / "tokenizer.json" if self.model else None
        return str(default) if default and default.is_file() else ""


class ClassDefaults(BaseModel):
    """What a request of one complexity class needs when its caller gave no hints."""

    latency_budget_ms: float = Field(gt=0)
    min_accuracy: float = Field(ge=0, le=1)


class PolicyConfig(BaseModel):
    # Utility = accuracy_weight * accuracy - latency_weight * predicted seconds - cost_weight * $/M tokens.
    accuracy_weight: float = Field(0.2, ge=0)
    latency_weight: float = Field(0.05, ge=0)
    cost_weight: float = Field(0.2, ge=0)
    # A tier whose KV cache is fuller than this gets no new work while another tier has headroom.
    kv_pressure_threshold: float = Field(0.88, ge=0, le=1)
    classes: dict[str, ClassDefaults] = Field(
        default_factory=lambda: {
            "fast": ClassDefaults(latency_budget_ms=10_000, min_accuracy=0.0),
            "balanced": ClassDefaults(latency_budget_ms=30_000, min_accuracy=0.3),
            "precise": ClassDefaults(latency_budget_ms=120_000, min_accuracy=0.5),
        }
    )

    @field_validator("classes")
    @classmethod
    def _all_classes(cls, classes: dict[str, ClassDefaults]) -> dict[str, ClassDefaults]:
        missing = {"fast", "balanced", "precise"} - set(classes)
        if missing:
            raise ValueError(f"policy.classes needs fast, balanced and precise; missing {sorted(missing)}")
        return classes


class BreakerConfig(BaseModel):
    failure_threshold: int = Field(5, ge=1)
    open_base_s: float = Field(30.0, gt=0)
    open_max_s: float = Field(300.0, gt=0)
    half_open_probes: int = Field(3, ge=1)


class RetryConfig(BaseModel):
    # Retries (beyond the first attempt) earn `budget_ratio` per request, up to `budget_burst` saved.
    budget_ratio: float = Field(0.1, ge=0)
    budget_burst: float = Field(20.0, ge=0)
    backoff_initial_s: float = Field(0.01, ge=0)
    backoff_max_s: float = Field(0.5, ge=0)


class RouterConfig(BaseModel):
    listen: str = "127.0.0.1:50051"
    tiers: list[TierSpec]
    # Profiles file (schema in router/profiles.py); relative paths are relative to this config file.
    profiles: str = ""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    # Streams the router relays at once; beyond it RESOURCE_EXHAUSTED at once.
    max_in_flight: int = Field(1024, gt=0)
    # Health Check (besides Watch) and GetLoad are polled this often, each call with this deadline.
    health_interval_s: float = Field(1.0, gt=0)
    health_timeout_s: float = Field(2.0, gt=0)
    load_interval_s: float = Field(1.0, gt=0)
    # How often the config and profiles files are checked for changes.
    reload_interval_s: float = Field(0.5, gt=0)
    # On SIGTERM, how long in-flight streams may finish.
    grace_seconds: float = Field(10.0, ge=0)
    # On SIGTERM, how long health says NOT_SERVING before new calls are refused.
    drain_notice_seconds: float = Field(1.0, ge=0)
    # /metrics port, OTLP endpoint, prompt logging (docs/observability.md).
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    @field_validator("tiers")
    @classmethod
    def _unique_names(cls, tiers: list[TierSpec]) -> list[TierSpec]:
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if not tiers:
            raise ValueError("at least one tier is required")
        return tiers


def load_config(path: str | Path) -> RouterConfig:
    path = Path(path)
    config = RouterConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    if config.profiles and not Path(config.profiles).is_absolute():
        config = config.model_copy(update={"profiles": str(path.parent / config.profiles)})
    return config
