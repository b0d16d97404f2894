"""python -m tier_server --model DIR --name bf16 --port 50061 ...  (see --help)"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from mesh.config import MeshConfigError
from mesh.observability import configure_logging
from mesh.server import install_uvloop, stop_event_on_signals
from tier_server.config import TierConfig, load_tier_config


def build_engine(cfg: TierConfig):
    if cfg.engine == "fake":
        from tier_server.fake_engine import FakeEngine

        return FakeEngine(model=cfg.model, max_model_len=cfg.max_model_len, token_delay_s=cfg.fake_token_delay_ms / 1000)
    from tier_server.vllm_engine import VllmEngine, VllmSettings

    return VllmEngine(
        VllmSettings(
            model=cfg.model,
            dtype=cfg.dtype,
            quantization=cfg.vllm_quantization,
            max_model_len=cfg.max_model_len,
            kv_cache_bytes=int(cfg.kv_cache_gib * 1024**3),
            max_num_seqs=cfg.max_num_seqs,
        )
    )


async def serve(cfg: TierConfig) -> None:
    from tier_server.server import TierServer

    stop = stop_event_on_signals()
    from mesh.observability import tracer_provider

    from tier_server.limits import Limits
    from tier_server.prompting import PromptFormat

    server = TierServer(
        build_engine(cfg), cfg.name, cfg.quantization, metrics_host=cfg.metrics_host, metrics_port=cfg.metrics_port,
        tracer_provider=tracer_provider("qarr-tier", cfg.otlp_endpoint, **{"qarr.tier": cfg.name}),
        limits=Limits.for_tier(
            cfg.max_model_len, max_request_bytes=cfg.max_request_bytes, max_prompt_bytes=cfg.max_prompt_bytes,
            max_messages=cfg.max_messages,
        ),
        prompt_format=PromptFormat(cfg.prompt_template, tuple(cfg.stop)),
        tls=cfg.tls, reflection=cfg.reflection,
        health_address=f"{cfg.host}:{cfg.health_port}" if cfg.health_port is not None else None,
    )
    await server.start(f"{cfg.host}:{cfg.port}")
    await stop.wait()
    logging.getLogger("qarr.tier").info("tier %s draining (grace %.0f s)", cfg.name, cfg.grace_seconds)
    await server.stop(cfg.grace_seconds, cfg.drain_notice_seconds)


def main(argv: list[str] | None = None) -> int:
    cfg = load_tier_config(sys.argv[1:] if argv is None else argv)
    configure_logging(cfg.log_format, cfg.log_level)
    # Offline by default: the model is a local folder, and no hub is reachable
    # on many of the machines this runs on.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if cfg.engine == "fake":
        install_uvloop()
    try:
        asyncio.run(serve(cfg))
    except MeshConfigError as e:  # a certificate or key file that cannot be used
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
