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

# Exit status when the engine died: the process ends so that its supervisor (the launcher, a container
# runtime) starts a new tier, engine included; a live process with a dead engine would never be restarted.
EXIT_ENGINE_DEAD = 3
ENGINE_DEAD_GRACE_S = 1.0


def build_engine(cfg: TierConfig):
    if cfg.engine == "fake":
        from tier_server.fake_engine import FakeEngine

        return FakeEngine(model=cfg.model, max_model_len=cfg.max_model_len, token_delay_s=cfg.fake_token_delay_ms / 1000,
                          engine_process=cfg.fake_engine_process)
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


async def serve(cfg: TierConfig) -> int:
    """Run the tier until SIGTERM/SIGINT (drain, exit 0) or until its engine dies (exit EXIT_ENGINE_DEAD once the
    calls in flight have ended: they fail at once with UNAVAILABLE; at most ENGINE_DEAD_GRACE_S)."""
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
    log = logging.getLogger("qarr.tier")
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(server.engine_died.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if server.engine_died.is_set():
        # Health already says NOT_SERVING and the calls in flight failed at once: no notice, a short grace for
        # their last messages (the full one would wait on the routers' health Watch streams for nothing).
        log.error("tier %s: engine died; exiting with status %d so that it is restarted", cfg.name, EXIT_ENGINE_DEAD)
        await server.stop(min(cfg.grace_seconds, ENGINE_DEAD_GRACE_S))
        return EXIT_ENGINE_DEAD
    log.info("tier %s draining (grace %.0f s)", cfg.name, cfg.grace_seconds)
    await server.stop(cfg.grace_seconds, cfg.drain_notice_seconds)
    return 0


def engine_environment(cfg: TierConfig) -> dict[str, str]:
    """What the engine process needs in its environment: the cores of `cpu_cores` for the CPU build's OpenMP
    threads (one thread a core), else a caller's own VLLM_CPU_OMP_THREADS_BIND, else unbound."""
    bind = cfg.cpu_cores or os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or "nobind"
    return {"VLLM_CPU_OMP_THREADS_BIND": bind}


def main(argv: list[str] | None = None) -> int:
    cfg = load_tier_config(sys.argv[1:] if argv is None else argv)
    configure_logging(cfg.log_format, cfg.log_level)
    # Offline by default: the model is a local folder, and no hub is reachable
    # on many of the machines this runs on.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(engine_environment(cfg))
    if cfg.engine == "fake":
        install_uvloop()
    try:
        return asyncio.run(serve(cfg))
    except MeshConfigError as e:  # a certificate or key file that cannot be used
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
