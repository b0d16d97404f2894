"""The profiles file: what the profiler measured per tier, read by the router.

Written by `qarr profile` (issue: tiers from measurement), read by choose_tier.
Schema version 1:

    version: 1
    measured: {date: "2026-11-23", machine: "2 cores x86_64, no GPU", tool: "qarr profile"}
    tiers:
      bf16:
        ttft_ms_p50: 46.0
        ttft_ms_p95: 80.0
        decode_tps_c1: 54.0        # tokens/s, one stream
        decode_tps_cn: 278.0       # tokens/s summed over `concurrency_n` streams
        concurrency_n: 8
        prompt_tps: 900.0          # prompt tokens/s during prefill
        peak_memory_bytes: 1200000000
        accuracy: 0.41             # 0-1 on the eval set
        tokens_per_word: 1.4
        cost_per_million_tokens: 0.12
        routable: true
        not_routable_reason: ""
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class TierProfile(BaseModel):
    ttft_ms_p50: float = Field(ge=0)
    ttft_ms_p95: float = Field(0.0, ge=0)
    decode_tps_c1: float = Field(gt=0)
    decode_tps_cn: float = Field(0.0, ge=0)
    concurrency_n: int = Field(1, ge=1)
    prompt_tps: float = Field(0.0, ge=0)
    peak_memory_bytes: int = Field(0, ge=0)
    accuracy: float = Field(ge=0, le=1)
    tokens_per_word: float = Field(1.3, gt=0)
    cost_per_million_tokens: float = Field(0.0, ge=0)
    routable: bool = True
    not_routable_reason: str = ""


class Profiles(BaseModel):
    version: int = SCHEMA_VERSION
    measured: dict[str, str] = Field(default_factory=dict)
    tiers: dict[str, TierProfile] = Field(default_factory=dict)


def load_profiles(path: str | Path) -> Profiles:
    data = yaml.safe_load(Path(path).read_text()) or {}
    profiles = Profiles.model_validate(data)
    if profiles.version != SCHEMA_VERSION:
        raise ValueError(f"{path}: profiles schema version {profiles.version}, this router reads {SCHEMA_VERSION}")
    return profiles


def dump_profiles(profiles: Profiles, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(profiles.model_dump(), sort_keys=False))
