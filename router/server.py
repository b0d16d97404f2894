"""Start and stop the router: backends, health watching, RouterService."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesh.server import MeshServer
from qarr.v1 import router_service_pb2
from router.backends import BackendPool
from router.config import RouterConfig
from router.relay import RouterServicer, handlers
from router.telemetry import RouterTelemetry, prices_from
from mesh.observability import MetricsServer, start_metrics_server

log = logging.getLogger("qarr.router")
SERVICE = router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServer:
    def __init__(self, config: RouterConfig, *, tracer_provider=None, profiles=None) -> None:
        self.config = config
        self.pool = BackendPool(config.tiers)
        # Observability: metrics, traces (when a provider is given), the per-request log line.
        obs = config.observability
        self.tracer_provider = tracer_provider
        self.telemetry = RouterTelemetry(
            prices=prices_from(config.tiers, profiles), log_prompts=obs.log_prompts,
            tracer=tracer_provider.get_tracer("qarr.router") if tracer_provider is not None else None,
        )
        self.telemetry.declare_tiers(self.pool.backends)
        self.metrics: MetricsServer | None = None
        self._health_mirror: asyncio.Task | None = None
        self.servicer = RouterServicer(self.pool, self.telemetry)
        self.mesh = MeshServer([SERVICE])
        self.mesh.server.add_generic_rpc_handlers((handlers(self.servicer),))

    async def start(self, address: str | None = None) -> int:
        self.pool.start()
        self._health_mirror = asyncio.create_task(self.telemetry.watch_health(self.pool), name="telemetry-health")
        obs = self.config.observability
        if obs.metrics_port is not None:
            self.metrics = start_metrics_server(self.telemetry.registry, obs.metrics_host, obs.metrics_port)
            log.info("router metrics on http://%s:%d/metrics", obs.metrics_host, self.metrics.port)
        port = await self.mesh.start(address or self.config.listen)
        # The router can take calls as soon as it listens; tiers come and go.
        await self.mesh.set_health(True)
        log.info("router serving on port %d with tiers %s", port, list(self.pool.backends))
        return port

    async def stop(self, grace: float) -> None:
        await self.mesh.stop(grace)
        if self._health_mirror is not None:
            self._health_mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_mirror
        await self.pool.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes; blocks while a collector is down
