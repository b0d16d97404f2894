"""Start and stop the router: backends, health and load watching, hot reload, RouterService."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from mesh.server import MeshServer
from qarr.v1 import router_service_pb2
from router.backends import BackendPool
from router.config import RouterConfig
from router.profiles import Profiles
from router.relay import RouterServicer, handlers
from router.reload import Reloader

log = logging.getLogger("qarr.router")
SERVICE = router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServer:
    def __init__(self, config: RouterConfig, profiles: Profiles | None = None, config_path: str | Path | None = None) -> None:
        """`config_path`: the file `config` came from; when given, edits to it (and to its profiles file) apply live."""
        self.config = config
        self.pool = BackendPool(config)
        self.servicer = RouterServicer(self.pool, config, profiles or Profiles())
        self.mesh = MeshServer([SERVICE])
        self.mesh.server.add_generic_rpc_handlers((handlers(self.servicer),))
        self.reloader = (
            Reloader(config_path, config.profiles, self.servicer.apply, config.reload_interval_s) if config_path else None
        )
        self._reload_task: asyncio.Task | None = None

    async def start(self, address: str | None = None) -> int:
        self.pool.start()
        if self.reloader:
            self._reload_task = asyncio.create_task(self.reloader.run(), name="config-reload")
        port = await self.mesh.start(address or self.config.listen)
        # The router can take calls as soon as it listens; tiers come and go.
        await self.mesh.set_health(True)
        log.info("router serving on port %d with tiers %s", port, list(self.pool.backends))
        return port

    async def stop(self, grace: float) -> None:
        if self._reload_task:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload_task
        await self.mesh.stop(grace)
        await self.pool.close()
