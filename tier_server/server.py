"""Start and stop a tier: engine up, warm-up answered, then health SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mesh.config import ServerTLS
from mesh.observability import MetricsServer, start_metrics_server
from mesh.server import SERVER_OPTIONS, MeshServer
from tier_server.engine import Engine, Sampling
from tier_server.limits import Limits
from tier_server.metrics import TierTelemetry
from tier_server.prompting import PromptFormat
from tier_server.servicer import SERVICE, TierServicer, add_to_server

log = logging.getLogger("qarr.tier")


class TierServer:
    def __init__(
        self, engine: Engine, name: str, quantization: str, *,
        metrics_host: str = "127.0.0.1", metrics_port: int | None = None, tracer_provider=None,
        tls: ServerTLS | None = None, reflection: bool = True, health_address: str | None = None,
        limits: Limits | None = None, prompt_format: PromptFormat | None = None,
    ) -> None:
        """`tls`: TLS on the listener; with a client CA only callers holding a certificate it signed
        (the router) get through the handshake. None: plaintext."""
        self.engine = engine
        self.name = name
        limits = limits if limits is not None else Limits.for_tier(engine.info.max_model_len)
        # Larger messages are refused by gRPC (RESOURCE_EXHAUSTED) before any of our code runs.
        self.mesh = MeshServer(
            [SERVICE], options=(*SERVER_OPTIONS, ("grpc.max_receive_message_length", limits.max_request_bytes)),
            tls=tls, reflection=reflection, health_address=health_address,
        )
        # Observability: /metrics on its own port when metrics_port is set (0 = any free port).
        self.tracer_provider = tracer_provider
        tracer = tracer_provider.get_tracer("qarr.tier") if tracer_provider is not None else None
        self.telemetry = TierTelemetry(name, engine, tracer=tracer)
        self.metrics_address = (metrics_host, metrics_port)
        self.metrics: MetricsServer | None = None
        servicer = TierServicer(engine, name, quantization, self.telemetry, limits=limits, prompt_format=prompt_format)
        add_to_server(servicer, self.mesh.server)
        self._watchdog: asyncio.Task | None = None
        # Set once the engine died: the tier can serve nothing more until it is restarted (see __main__).
        self.engine_died = asyncio.Event()

    async def start(self, address: str) -> int:
        """Listen first (health answers NOT_SERVING meanwhile), then load and warm up the engine."""
        port = await self.mesh.start(address)
        if self.metrics_address[1] is not None:
            self.metrics = start_metrics_server(self.telemetry.registry, *self.metrics_address)
            log.info("tier %s metrics on http://%s:%d/metrics", self.name, self.metrics_address[0], self.metrics.port)
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
        self.engine_died.set()

    async def stop(self, grace: float, notice: float = 0.0) -> None:
        """Drain: NOT_SERVING (for `notice` seconds before new calls are refused), in-flight
        streams get `grace` seconds, then the engine shuts down."""
        if self._watchdog:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self.mesh.stop(grace, notice)
        await self.engine.shutdown()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes; blocks while a collector is down
