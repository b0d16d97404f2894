"""Start and stop the router: backends, health watching, RouterService."""

from __future__ import annotations

import logging

from mesh.server import MeshServer
from qarr.v1 import router_service_pb2
from router.backends import BackendPool
from router.config import RouterConfig
from router.relay import RouterServicer, handlers

log = logging.getLogger("qarr.router")
SERVICE = router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServer:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.pool = BackendPool(config.tiers)
        self.servicer = RouterServicer(self.pool)
        self.mesh = MeshServer([SERVICE])
        self.mesh.server.add_generic_rpc_handlers((handlers(self.servicer),))

    async def start(self, address: str | None = None) -> int:
        self.pool.start()
        port = await self.mesh.start(address or self.config.listen)
        # The router can take calls as soon as it listens; tiers come and go.
        await self.mesh.set_health(True)
        log.info("router serving on port %d with tiers %s", port, list(self.pool.backends))
        return port

    async def stop(self, grace: float) -> None:
        await self.mesh.stop(grace)
        await self.pool.close()
