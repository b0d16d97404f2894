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
    predictor: predictor.json      # optional: per-request accuracy predictor (router/predictor.py), beside this file

With a predictor, the router ranks tiers by each request's predicted accuracy instead of the
profiled constant. It is loaded (and checked against the eval set the profiles were measured
on) with the profiles, so a reload applies both or neither.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, PrivateAttr

from router.predictor import AccuracyPredictor, load_predictor

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
    # Accuracy predictor file, relative to this file; "" = every tier's profiled accuracy.
    predictor: str = ""
    _predictor: AccuracyPredictor | None = PrivateAttr(None)
    _predictor_path: Path | None = PrivateAttr(None)

    @property
    def accuracy_predictor(self) -> AccuracyPredictor | None:
        """The loaded predictor the profiles name, or None."""
        return self._predictor

    @property
    def predictor_path(self) -> Path | None:
        return self._predictor_path


def _eval_sha(measured: dict[str, str]) -> str:
    """The hex digest (or its prefix) in `measured.eval_set`, e.g. "golden.jsonl sha256:3f6c832cf4ad9007"."""
    _, _, sha = measured.get("eval_set", "").partition("sha256:")
    return sha.strip()


def load_profiles(path: str | Path) -> Profiles:
    """The profiles file and the predictor it names; ValueError when either is invalid or they disagree
    on the eval set (a predictor trained on other items than the profiles measured)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    profiles = Profiles.model_validate(data)
    if profiles.version != SCHEMA_VERSION:
        raise ValueError(f"{path}: profiles schema version {profiles.version}, this router reads {SCHEMA_VERSION}")
    if profiles.predictor:
        where = Path(profiles.predictor)
        where = where if where.is_absolute() else path.parent / where
        predictor = load_predictor(where)
        measured = _eval_sha(profiles.measured)
        if measured and predictor.eval_set_sha256 and not predictor.eval_set_sha256.startswith(measured):
            raise ValueError(
                f"{path}: predictor {where} was trained on eval set sha256:{predictor.eval_set_sha256[:16]}, "
                f"the profiles were measured on sha256:{measured}; re-run qarr train-router"
            )
        profiles._predictor, profiles._predictor_path = predictor, where
    return profiles


def dump_profiles(profiles: Profiles, path: str | Path) -> None:
    data = profiles.model_dump()
    if not data["predictor"]:
        del data["predictor"]
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
