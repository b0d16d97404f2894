"""python -m router --config mesh.yaml [--listen HOST:PORT]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from mesh.server import install_uvloop, stop_event_on_signals
from router.config import RouterConfig, load_config


async def serve(config: RouterConfig) -> None:
    from router.server import RouterServer

    stop = stop_event_on_signals()
    server = RouterServer(config)
    await server.start()
    await stop.wait()
    await server.stop(config.grace_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-router", description="QARR router: routes Generate calls to tiers.")
    parser.add_argument("--config", required=True, help="YAML file listing the tiers (see mesh.yaml)")
    parser.add_argument("--listen", help="HOST:PORT to listen on (overrides the config file)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = load_config(args.config)
    if args.listen:
        config = config.model_copy(update={"listen": args.listen})
    install_uvloop()
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
