"""One Backend per tier: its channel, raw-bytes Generate, breaker, and health and load kept up to date.

Health comes from two feeds: grpc.health.v1 Watch (pushed at once) and Check on
an interval with a deadline (catches a tier that hangs without closing its
connection). NOT_SERVING from either trips the breaker; SERVING again lets it
probe at once (HALF_OPEN). Load comes from GetLoad polled on an interval, and
from the last message of each stream (core.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qarr.v1 import common_pb2, tier_service_pb2, tier_service_pb2_grpc
from router.breaker import Breaker
from router.choose import LiveState
from mesh.config import BreakerConfig, MeshConfig, TierSpec
from mesh.tls import open_channel

log = logging.getLogger("qarr.router")

CHANNEL_OPTIONS = (
    # One retry layer: the router's own. gRPC's transparent retries stay off.
    ("grpc.enable_retries", 0),
    # A fixed receive window per tier stream (64 KiB): with BDP probing the window grew whenever a tier
    # outpaced a caller that had stopped reading, and the router buffered MiBs per stalled stream (26 MiB
    # for 21 streams after 20 s, still growing). Token streams need no bandwidth-delay tuning.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)
TIER_SERVICE = tier_service_pb2.DESCRIPTOR.services_by_name["TierService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING


def channel_options(config: MeshConfig) -> tuple:
    """Reconnect within half a health interval when a tier comes back (gRPC's default backoff grows to
    120 s), so the router sees it SERVING and becomes ready again within one interval."""
    backoff_ms = max(100, min(2_000, int(config.health_interval_s * 500)))
    return (*CHANNEL_OPTIONS, ("grpc.initial_reconnect_backoff_ms", min(200, backoff_ms)), ("grpc.max_reconnect_backoff_ms", backoff_ms))


def tier_channel(address: str, config: MeshConfig) -> grpc.aio.Channel:
    """The router's channel to a tier: TLS (mutual when upstream_tls has a client certificate) or plaintext."""
    return open_channel(address, config.upstream_tls, channel_options(config))


def new_breaker(config: BreakerConfig, clock: Callable[[], float]) -> Breaker:
    return Breaker(clock, config.failure_threshold, config.open_base_s, config.open_max_s, config.half_open_probes)


class Backend:
    def __init__(
        self, spec: TierSpec, config: MeshConfig, clock: Callable[[], float] = time.monotonic, changed: asyncio.Event | None = None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
        self.channel = tier_channel(spec.address, config)
        # Bytes in, bytes out: the router forwards request and chunks without re-encoding.
        self.generate = self.channel.unary_stream("/qarr.v1.TierService/Generate")
        self.tier_stub = tier_service_pb2_grpc.TierServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.breaker = new_breaker(config.breaker, clock)
        self.serving: bool | None = None  # None: not heard from yet
        self.load = common_pb2.Load()
        self.in_flight = 0
        self.silent_since: float | None = None  # monotonic time of the first health Check still unanswered
        self.changed = changed if changed is not None else asyncio.Event()  # set on every health change
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_health(), name=f"health-watch-{self.name}"),
            asyncio.create_task(self._check_health(), name=f"health-check-{self.name}"),
            asyncio.create_task(self._poll_load(), name=f"load-{self.name}"),
        ]

    def live(self) -> LiveState:
        load = self.load
        return LiveState(
            serving=self.serving,
            breaker_allows=self.breaker.allows(),
            in_flight=self.in_flight,
            running=load.running_requests,
            waiting=load.waiting_requests,
            kv_cache_usage=load.kv_cache_usage,
        )

    async def _watch_health(self, retry_s: float = 0.5) -> None:
        """Follow grpc.health.v1 Watch; any break marks the tier not serving until it answers again."""
        request = health_pb2.HealthCheckRequest(service=TIER_SERVICE)
        while True:
            try:
                async for resp in self.health_stub.Watch(request):
                    self._set_serving(resp.status == SERVING)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    self._set_serving(False)
            await asyncio.sleep(retry_s)

    async def _check_health(self) -> None:
        """grpc.health.v1 Check every health_interval_s with a deadline: a hung tier counts as down."""
        request = health_pb2.HealthCheckRequest(service=TIER_SERVICE)
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            sent = time.monotonic()
            try:
                resp = await self.health_stub.Check(request, timeout=self.config.health_timeout_s)
                self.silent_since = None
                self._set_serving(resp.status == SERVING)
            except grpc.aio.AioRpcError:
                if self.silent_since is None:
                    self.silent_since = sent
                self._set_serving(False)

    async def _poll_load(self) -> None:
        while True:
            await asyncio.sleep(self.config.load_interval_s)
            if not self.serving:
                continue
            with contextlib.suppress(grpc.aio.AioRpcError):
                resp = await self.tier_stub.GetLoad(tier_service_pb2.GetLoadRequest(), timeout=self.config.health_timeout_s)
                self.load = resp.load

    def _set_serving(self, serving: bool) -> None:
        if serving != self.serving:
            log.info("tier %s is %s", self.name, "SERVING" if serving else "NOT_SERVING")
            if self.serving and not serving:
                # Trip on the fall only: a tier never seen SERVING is not eligible anyway, and
                # should not start its life with an open breaker because its first check was slow.
                self.breaker.trip()
            elif serving and self.serving is False:
                # Back from NOT_SERVING: let probe calls find out now rather than after the open time.
                self.breaker.probe_now()
            self.serving = serving
            self.changed.set()

    def reconfigure(self, spec: TierSpec, config: MeshConfig) -> None:
        """New settings for the same address (config reload); breaker state and counters stay."""
        self.spec = spec
        self.config = config
        b = config.breaker
        self.breaker.configure(b.failure_threshold, b.open_base_s, b.open_max_s, b.half_open_probes)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.channel.close()


class BackendPool:
    def __init__(self, config: MeshConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.changed = asyncio.Event()  # set when any tier's health changes
        self.backends = {s.name: Backend(s, config, clock, self.changed) for s in config.tiers}
        self._started = False

    def start(self) -> None:
        self._started = True
        for b in self.backends.values():
            b.start()

    def swap(self, config: MeshConfig) -> list[Backend]:
        """Follow a new config at once: keep tiers whose address is unchanged, open new ones.
        Returns the backends dropped; close them with `retire` (their open streams end with them)."""
        old = self.backends
        new: dict[str, Backend] = {}
        for spec in config.tiers:
            b = old.get(spec.name)
            if b is not None and b.spec.address == spec.address:
                b.reconfigure(spec, config)
            else:
                b = Backend(spec, config, self.clock, self.changed)
                if self._started:
                    b.start()
            new[spec.name] = b
        self.backends = new
        self.changed.set()
        return [b for name, b in old.items() if new.get(name) is not b]

    @staticmethod
    async def retire(gone: list[Backend]) -> None:
        await asyncio.gather(*(b.close() for b in gone))

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends.values()))
