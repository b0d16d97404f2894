"""Start and stop a tier: engine up, warm-up answered, then health SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesh.server import MeshServer
from qarr.v1 import tier_service_pb2, tier_service_pb2_grpc
from tier_server.engine import Engine, Sampling
from tier_server.servicer import TierServicer

log = logging.getLogger("qarr.tier")
SERVICE = tier_service_pb2.DESCRIPTOR.services_by_name["TierService"].full_name


class TierServer:
    def __init__(self, engine: Engine, name: str, quantization: str) -> None:
        self.engine = engine
        self.name = name
        self.mesh = MeshServer([SERVICE])
        tier_service_pb2_grpc.add_TierServiceServicer_to_server(TierServicer(engine, name, quantization), self.mesh.server)
        self._watchdog: asyncio.Task | None = None

    async def start(self, address: str) -> int:
        """Listen first (health answers NOT_SERVING meanwhile), then load and warm up the engine."""
        port = await self.mesh.start(address)
        await self.engine.start()
        await self._warm_up()
        await self.mesh.set_health(True)
        self._watchdog = asyncio.create_task(self._watch_engine())
        log.info("tier %s serving on port %d", self.name, port)
        return port

    async def _warm_up(self) -> None:
        ids = await self.engine.tokenize("Hello")
        async for _ in self.engine.generate(ids, Sampling(max_tokens=2, temperature=0.0), f"warmup-{self.name}"):
            pass

    async def _watch_engine(self, interval: float = 0.5) -> None:
        while not self.engine.dead:
            await asyncio.sleep(interval)
        log.error("tier %s: engine died; health NOT_SERVING", self.name)
        await self.mesh.set_health(False)

    async def stop(self, grace: float) -> None:
        """Drain: NOT_SERVING, in-flight streams get `grace` seconds, then the engine shuts down."""
        if self._watchdog:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.mesh.stop(grace)
        await self.engine.shutdown()
