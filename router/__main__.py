"""python -m router --config mesh.yaml [--listen HOST:PORT]"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from mesh.server import install_uvloop, stop_event_on_signals
from router.config import RouterConfig
from router.profiles import Profiles
from router.reload import load_both


async def serve(config: RouterConfig, profiles: Profiles, config_path: str) -> None:
    from router.server import RouterServer

    stop = stop_event_on_signals()
    server = RouterServer(config, profiles, config_path)
    await server.start()
    await stop.wait()
    await server.stop(config.grace_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qarr-router", description="QARR router: routes Generate calls to tiers.")
    parser.add_argument("--config", required=True, help="YAML file: tiers, policy, profiles path (see mesh.yaml); edits apply live")
    parser.add_argument("--listen", help="HOST:PORT to listen on (overrides the config file)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # A broken file at start is fatal (there is no last good one); later edits reload live.
    config, profiles = load_both(args.config)
    if args.listen:
        config = config.model_copy(update={"listen": args.listen})
    install_uvloop()
    asyncio.run(serve(config, profiles, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
