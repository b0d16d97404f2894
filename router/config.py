"""Router configuration: a YAML file, read in __main__ and passed down."""

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


class RouterConfig(BaseModel):
    listen: str = "127.0.0.1:50051"
    tiers: list[TierSpec]
    # Seconds a tier may take to answer a health check before it counts as down.
    health_timeout_s: float = Field(2.0, gt=0)
    # On SIGTERM, how long in-flight streams may finish.
    grace_seconds: float = Field(10.0, ge=0)
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
    with open(path) as f:
        return RouterConfig.model_validate(yaml.safe_load(f) or {})
