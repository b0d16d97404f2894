"""python -m router --config mesh.yaml [--listen HOST:PORT] [--workers N]"""

from __future__ import annotations

import argparse
import asyncio
import sys

from mesh.observability import ObservabilityConfig, configure_logging
from mesh.server import install_uvloop, stop_event_on_signals
from mesh.config import MeshConfig, MeshConfigError
from router.profiles import Profiles
from router.reload import load_both


async def serve(config: MeshConfig, profiles: Profiles, config_path: str, worker: int | None = None) -> None:
    from mesh.observability import tracer_provider
    from router.server import RouterServer

    stop = stop_event_on_signals()
    provider = tracer_provider("qarr-router", config.observability.otlp_endpoint)
    # A worker of `--workers N` shares its port with its siblings and leaves /metrics to its parent.
    shared = {"reuse_port": True, "metrics": False} if worker is not None else {}
    server = RouterServer(config, profiles, config_path, tracer_provider=provider, **shared)
    # A worker listens once some tier is SERVING (or after 10 s): its siblings serve meanwhile.
    await server.start(wait_ready_s=10.0 if worker is not None else 0.0)
    await stop.wait()
    await server.stop(config.grace_seconds, config.drain_notice_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-router", description="QARR router: routes Generate calls to tiers.")
    parser.add_argument("--config", required=True, help="YAML file: tiers, policy, profiles path (see mesh.yaml); edits apply live")
    parser.add_argument("--listen", help="HOST:PORT to listen on (overrides the config file)")
    parser.add_argument("--http-listen", help="serve the OpenAI-compatible HTTP door on HOST:PORT (overrides http.listen; enables it)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto", help="auto: console on a TTY, JSON otherwise")
    parser.add_argument("--log-prompts", action="store_true", default=None, help="put prompt text in the per-request log line (debug)")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics on this port (0 = any free port; overrides the config file)")
    parser.add_argument("--metrics-host", help="address /metrics listens on (overrides the config file)")
    parser.add_argument("--otlp-endpoint", help="export traces over OTLP/gRPC, e.g. http://127.0.0.1:4317 (overrides the config file)")
    parser.add_argument("--workers", type=int, default=1, help="router processes sharing the port (SO_REUSEPORT), "
                        "each a full router; metrics add up over them on one /metrics (default %(default)s)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the parent of --workers N
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    configure_logging(args.log_format, args.log_level, fields={"worker": args.worker} if args.worker is not None else None)
    # A broken file at start is fatal (there is no last good one); later edits reload live.
    try:
        config, profiles = load_both(args.config)
    except MeshConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if args.listen:
        config = config.model_copy(update={"listen": args.listen})
    if args.http_listen:
        config = config.model_copy(update={"http": config.http.model_copy(update={"enabled": True, "listen": args.http_listen})})
    overrides = {k: v for k in ("metrics_port", "metrics_host", "otlp_endpoint", "log_prompts") if (v := getattr(args, k)) is not None}
    if overrides:
        obs = ObservabilityConfig.model_validate({**config.observability.model_dump(), **overrides})
        config = config.model_copy(update={"observability": obs})
    if args.workers > 1 and args.worker is None:
        from router import workers

        passed = [a for a in ("log_level", "log_format", "otlp_endpoint") if getattr(args, a) is not None]
        flags = [f for a in passed for f in (f"--{a.replace('_', '-')}", str(getattr(args, a)))]
        flags += ["--log-prompts"] if args.log_prompts else []
        return workers.run(args.workers, [sys.executable, "-m", "router", "--config", args.config, *flags], config)
    install_uvloop()
    try:
        asyncio.run(serve(config, profiles, args.config, args.worker))
    except MeshConfigError as e:  # a certificate, key or tokens file that cannot be used
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
