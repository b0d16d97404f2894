"""One Backend per tier: its channel, raw-bytes Generate, and health kept up to date by Watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qarr.v1 import tier_service_pb2, tier_service_pb2_grpc
from router.config import TierSpec

log = logging.getLogger("qarr.router")

CHANNEL_OPTIONS = (
    # One retry layer: the router's own. gRPC's transparent retries stay off.
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)
TIER_SERVICE = tier_service_pb2.DESCRIPTOR.services_by_name["TierService"].full_name


class Backend:
    def __init__(self, spec: TierSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.channel = grpc.aio.insecure_channel(spec.address, options=CHANNEL_OPTIONS)
        # Bytes in, bytes out: the router forwards request and chunks without re-encoding.
        self.generate = self.channel.unary_stream("/qarr.v1.TierService/Generate")
        self.tier_stub = tier_service_pb2_grpc.TierServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.serving: bool | None = None  # None: not heard from yet
        self.in_flight = 0
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_health(), name=f"health-{self.name}")

    async def _watch_health(self, retry_s: float = 0.5) -> None:
        """Follow grpc.health.v1 Watch; any break marks the tier not serving until it answers again."""
        request = health_pb2.HealthCheckRequest(service=TIER_SERVICE)
        while True:
            try:
                async for resp in self.health_stub.Watch(request, wait_for_ready=False):
                    self._set_serving(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    self._set_serving(False)
            await asyncio.sleep(retry_s)

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            log.info("tier %s is %s", self.name, "SERVING" if serving else "NOT_SERVING")
        self.serving = serving

    async def close(self) -> None:
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.channel.close()


class BackendPool:
    def __init__(self, specs: list[TierSpec]) -> None:
        self.backends = {s.name: Backend(s) for s in specs}

    def start(self) -> None:
        for b in self.backends.values():
            b.start()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()))
