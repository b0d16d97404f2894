"""Tier server configuration: CLI flags, with QARR_TIER_* environment variables as defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TierConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QARR_TIER_", cli_prog_name="qarr-tier", cli_kebab_case=True)

    name: str = Field("default", description="tier name the router knows this server by")
    model: str = Field(".cache/models/smollm2-135m-instruct", description="model folder (or hub id where reachable)")
    engine: Literal["vllm", "fake"] = Field("vllm", description="vllm, or fake for tests and benchmarks")
    quantization: str = Field(
        "bf16", description="label reported to callers (bf16, fp32, w8a8, w4a16, awq, fp8...)"
    )
    dtype: str = Field("auto", description="vLLM dtype: auto, bfloat16, float16, float32")
    vllm_quantization: str | None = Field(None, description="vLLM quantization method, when not in the checkpoint")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(50061, description="port to listen on (0 = any free port)")
    max_model_len: int = Field(2048, gt=0, description="context length in tokens")
    kv_cache_gib: float = Field(0.5, gt=0, description="KV-cache size in GiB (bounded, always)")
    max_num_seqs: int = Field(64, gt=0, description="most sequences the engine batches at once")
    grace_seconds: float = Field(10.0, ge=0, description="on SIGTERM, how long in-flight streams may finish")
    drain_notice_seconds: float = Field(
        1.0, ge=0, description="on SIGTERM, how long health says NOT_SERVING before new calls are refused"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING")
    # Observability (docs/observability.md):
    log_format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, JSON otherwise")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")
    metrics_port: int | None = Field(None, ge=0, description="port of /metrics (0 = any free port; unset = off)")
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC trace collector, e.g. http://127.0.0.1:4317 (unset = off)")
    # Fake engine only:
    fake_token_delay_ms: float = Field(0.0, ge=0, description="fake engine: delay per token")
