"""Tiers and their replicas: one Backend per replica (channel, raw-bytes Generate, breaker, health, load,
in-flight count, live latency), one Tier per tier (its replicas, listed or found by DNS, and their aggregates).

Health comes from two feeds per replica: grpc.health.v1 Watch (pushed at once) and Check on
an interval with a deadline (catches a replica that hangs without closing its connection).
NOT_SERVING from either trips the replica's breaker; SERVING again lets it probe at once
(HALF_OPEN). Load comes from GetLoad polled on an interval, and from the last message of
each stream (core.py). A `dns:` tier re-resolves its name every `dns_interval_s` through a
resolver (the event loop's getaddrinfo unless one is injected): new addresses become
replicas, vanished ones stop taking new streams and close once their streams end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import BreakerConfig, MeshConfig, TierSpec, split_address
from qarr.v1 import common_pb2, tier_service_pb2, tier_service_pb2_grpc
from router.breaker import Breaker, State
from router.choose import LiveState
from router.live import LiveStats
from router.pick import Pick, ReplicaView, pick_replica, stable_id
from mesh.tls import open_channel

log = logging.getLogger("qarr.router")
ONLY = Pick("", "only_replica")  # the pick of a tier's only replica (its address is the backend's)

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

# host, port -> "host:port" of every replica the name resolves to now (raises OSError when it cannot).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_dns(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA records), as sorted "ip:port" strings."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = set()
    for family, _, _, _, sockaddr in infos:
        ip = sockaddr[0]
        found.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return sorted(found)


def channel_options(config: MeshConfig) -> tuple:
    """Reconnect within half a health interval when a tier comes back (gRPC's default backoff grows to
    120 s), so the router sees it SERVING and becomes ready again within one interval."""
    backoff_ms = max(100, min(2_000, int(config.health_interval_s * 500)))
    return (*CHANNEL_OPTIONS, ("grpc.initial_reconnect_backoff_ms", min(200, backoff_ms)), ("grpc.max_reconnect_backoff_ms", backoff_ms))


def tier_channel(address: str, config: MeshConfig, name: str | None = None) -> grpc.aio.Channel:
    """The router's channel to one replica of a tier (the one place channels to tiers are made): TLS (mutual
    when upstream_tls has a client certificate) or plaintext. `name`: the name a replica dialled by IP (found
    by DNS) is checked against over TLS, unless upstream_tls.server_name says otherwise."""
    tls = config.upstream_tls
    options = channel_options(config)
    if tls is not None and name and not tls.server_name:
        options = (*options, ("grpc.ssl_target_name_override", name))
    return open_channel(address, tls, options)


def new_breaker(config: BreakerConfig, clock: Callable[[], float]) -> Breaker:
    return Breaker(clock, config.failure_threshold, config.open_base_s, config.open_max_s, config.half_open_probes)


class Backend:
    """One replica of a tier: an address with its own channel, health, breaker, load, in-flight count and live stats."""

    def __init__(
        self, spec: TierSpec, config: MeshConfig, clock: Callable[[], float] = time.monotonic,
        changed: asyncio.Event | None = None, address: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name  # the tier's name
        self.address = address or spec.static_addresses[0]
        self.id = stable_id(self.address)
        self.config = config
        # A replica found by DNS has an IP for an address: TLS checks its certificate against the DNS name.
        self.channel = tier_channel(self.address, config, spec.host if spec.dns else None)
        # Bytes in, bytes out: the router forwards request and chunks without re-encoding.
        self.generate = self.channel.unary_stream("/qarr.v1.TierService/Generate")
        self.tier_stub = tier_service_pb2_grpc.TierServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.breaker = new_breaker(config.breaker, clock)
        self.serving: bool | None = None  # None: not heard from yet
        self.load = common_pb2.Load()
        self.in_flight = 0
        self.silent_since: float | None = None  # monotonic time of the first health Check still unanswered
        self.served = 0  # streams that ended OK here
        f = config.feedback
        self.stats = LiveStats(f.alpha, f.min_samples, f.stale_half_life_s)
        self.changed = changed if changed is not None else asyncio.Event()  # set on every health change
        self._tasks: list[asyncio.Task] = []

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, {self.address!r})"

    def start(self) -> None:
        where = f"{self.name}@{self.address}"
        self._tasks = [
            asyncio.create_task(self._watch_health(), name=f"health-watch-{where}"),
            asyncio.create_task(self._check_health(), name=f"health-check-{where}"),
            asyncio.create_task(self._poll_load(), name=f"load-{where}"),
        ]

    def view(self) -> ReplicaView:
        load = self.load
        return ReplicaView(
            address=self.address, id=self.id, serving=self.serving, breaker_allows=self.breaker.allows(),
            in_flight=self.in_flight, max_in_flight=self.spec.max_in_flight, running=load.running_requests,
            waiting=load.waiting_requests, kv_cache_usage=load.kv_cache_usage,
        )

    async def _watch_health(self, retry_s: float = 0.5) -> None:
        """Follow grpc.health.v1 Watch; any break marks the replica not serving until it answers again."""
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
        """grpc.health.v1 Check every health_interval_s with a deadline: a hung replica counts as down."""
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
            log.info("tier %s replica %s is %s", self.name, self.address, "SERVING" if serving else "NOT_SERVING")
            if self.serving and not serving:
                # Trip on the fall only: a replica never seen SERVING is not eligible anyway, and
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
        f = config.feedback
        self.stats.configure(f.alpha, f.min_samples, f.stale_half_life_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.channel.close()

    async def retire(self, grace_s: float) -> None:
        """Stop watching it now; close it once its streams ended, or after `grace_s`."""
        deadline = time.monotonic() + grace_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.close()


def _best_breaker(states: Iterable[State]) -> State:
    """The tier-level breaker state: CLOSED if any replica's is, else HALF_OPEN if any, else OPEN."""
    states = set(states)
    for state in (State.CLOSED, State.HALF_OPEN):
        if state in states:
            return state
    return State.OPEN


class Tier:
    """One tier: its replicas and the aggregates choose_tier and ListTiers see."""

    def __init__(
        self, spec: TierSpec, config: MeshConfig, clock: Callable[[], float], changed: asyncio.Event,
        resolver: Resolver = resolve_dns,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.config = config
        self.clock = clock
        self.changed = changed
        self.resolver = resolver
        self.replicas: dict[str, Backend] = {a: self._new(a) for a in spec.static_addresses}
        self.resolved_at: float | None = None  # monotonic time of the last good DNS answer
        self.placed: OrderedDict[int, str] = OrderedDict()  # prefix key -> the replica that last took it (LRU)
        self._started = False
        self._discovery: asyncio.Task | None = None
        self._retiring: set[asyncio.Task] = set()

    def _new(self, address: str) -> Backend:
        return Backend(self.spec, self.config, self.clock, self.changed, address)

    def start(self) -> None:
        self._started = True
        for b in self.replicas.values():
            b.start()
        self._follow_dns()

    def _follow_dns(self) -> None:
        if self._discovery is not None:
            self._discovery.cancel()
            self._discovery = None
        if self.spec.dns and self._started:
            self._discovery = asyncio.create_task(self._discover(), name=f"dns-{self.name}")

    async def _discover(self) -> None:
        """Resolve the tier's name now and every dns_interval_s; a failed lookup keeps the replicas known."""
        host, port = split_address(self.spec.dns)
        while True:
            try:
                addresses = await self.resolver(host, port)
            except OSError as e:
                log.warning("tier %s: cannot resolve %s (%s); keeping its %d replicas", self.name, self.spec.dns, e, len(self.replicas))
            else:
                self.resolved_at = time.monotonic()
                self.set_addresses(addresses)
            await asyncio.sleep(self.spec.dns_interval_s)

    def set_addresses(self, addresses: Iterable[str]) -> None:
        """Make the replicas exactly `addresses`: open new ones, retire the ones gone (they finish their streams)."""
        wanted = list(dict.fromkeys(addresses))
        old = self.replicas
        if list(old) == wanted:
            return
        new = {}
        for a in wanted:
            b = old.get(a)
            if b is None:
                b = self._new(a)
                if self._started:
                    b.start()
            new[a] = b
        gone = [b for a, b in old.items() if a not in new]
        self.replicas = new
        added = [a for a in wanted if a not in old]
        if added or gone:
            log.info("tier %s replicas now %s (added %s, dropped %s)", self.name, wanted, added, [b.address for b in gone])
        for b in gone:
            task = asyncio.create_task(b.retire(self.config.grace_seconds), name=f"retire-{self.name}@{b.address}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self.changed.set()

    def reconfigure(self, spec: TierSpec, config: MeshConfig) -> None:
        """New settings (config reload): replicas whose address stays keep their state."""
        dns_changed = spec.dns != self.spec.dns or spec.dns_interval_s != self.spec.dns_interval_s
        self.spec, self.config = spec, config
        for b in self.replicas.values():
            b.reconfigure(spec, config)
        if dns_changed:
            self._follow_dns()  # stops following, or follows the new name (replicas change at its first answer)
        if not spec.dns:
            self.set_addresses(spec.static_addresses)

    # --- aggregates --------------------------------------------------------

    @property
    def serving(self) -> bool | None:
        """True when some replica is SERVING; None when none has been heard from (or there are none yet)."""
        states = [b.serving for b in self.replicas.values()]
        if any(states):
            return True
        return False if any(s is False for s in states) else None

    @property
    def in_flight(self) -> int:
        return sum(b.in_flight for b in self.replicas.values())

    @property
    def breaker_state(self) -> State:
        return _best_breaker(b.breaker.state for b in self.replicas.values())

    @property
    def load(self) -> common_pb2.Load:
        """Running and waiting summed over the replicas; KV-cache use their mean."""
        loads = [b.load for b in self.replicas.values()]
        return common_pb2.Load(
            running_requests=sum(x.running_requests for x in loads),
            waiting_requests=sum(x.waiting_requests for x in loads),
            kv_cache_usage=sum(x.kv_cache_usage for x in loads) / len(loads) if loads else 0.0,
        )

    def ready(self) -> bool:
        """Some replica is SERVING and its breaker is not OPEN."""
        return any(b.serving and b.breaker.state is not State.OPEN for b in self.replicas.values())

    def live(self) -> LiveState:
        """The tier as choose_tier sees it: serving and breaker from any replica; load, KV use and room
        from the least-loaded usable replica (the one the picker tends to take); live latency the mean
        of the usable replicas' estimates, as fresh as the freshest."""
        if len(self.replicas) == 1:  # the common case, on every request: no views, no means
            (b,) = self.replicas.values()
            allows = b.breaker.allows()
            if not (b.serving and allows):
                return LiveState(serving=b.serving, breaker_allows=allows or not b.serving)
            load, stats = b.load, b.stats
            return LiveState(
                serving=True, breaker_allows=True, in_flight=b.in_flight, running=load.running_requests,
                waiting=load.waiting_requests, kv_cache_usage=load.kv_cache_usage, ttft_ms=stats.ttft_estimate_ms,
                tpot_ms=stats.tpot_estimate_ms, freshness=stats.freshness(self.clock()),
            )
        views = [b.view() for b in self.replicas.values()]
        serving = self.serving
        usable = [v for v in views if v.serving and v.breaker_allows]
        if not usable:
            return LiveState(serving=serving, breaker_allows=not serving)
        best = min(usable, key=lambda v: (v.in_flight >= v.max_in_flight, v.load, v.kv_cache_usage))
        stats = [self.replicas[v.address].stats for v in usable]
        ttfts = [e for s in stats if (e := s.ttft_estimate_ms) is not None]
        tpots = [e for s in stats if (e := s.tpot_estimate_ms) is not None]
        now = self.clock()
        return LiveState(
            serving=True,
            breaker_allows=True,
            in_flight=best.in_flight,
            running=best.running,
            waiting=best.waiting,
            kv_cache_usage=min(v.kv_cache_usage for v in usable),
            ttft_ms=sum(ttfts) / len(ttfts) if ttfts else None,
            tpot_ms=sum(tpots) / len(tpots) if tpots else None,
            freshness=max(s.freshness(now) for s in stats),
        )

    def pick(self, key: int | None, seed: int, exclude: set[str]) -> tuple[Backend, Pick] | None:
        """The replica for this attempt (router/pick.py), or None when no replica can take it. Remembers
        which replica took the prefix (`affinity_memory` most recent prefixes)."""
        if len(self.replicas) == 1:  # the common case: nothing to choose, nothing to remember
            (b,) = self.replicas.values()
            usable = b.serving and b.breaker.allows() and b.in_flight < b.spec.max_in_flight and b.address not in exclude
            return (b, ONLY) if usable else None
        picker = self.config.picker
        placed = self.placed
        chosen = pick_replica(
            [b.view() for b in self.replicas.values()], key, seed,
            ratio=picker.affinity_load_ratio, slack=picker.affinity_load_slack,
            kv_threshold=self.config.policy.kv_pressure_threshold, exclude=exclude,
            preferred=placed.get(key) if key is not None else None,
        )
        if chosen is None:
            return None
        if key is not None and picker.affinity_memory:
            placed[key] = chosen.address
            placed.move_to_end(key)
            while len(placed) > picker.affinity_memory:
                placed.popitem(last=False)
        return self.replicas[chosen.address], chosen

    async def close(self) -> None:
        if self._discovery is not None:
            self._discovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._discovery
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*(b.close() for b in self.replicas.values()), *self._retiring, return_exceptions=True)


class BackendPool:
    """Every tier of the mesh, by name."""

    def __init__(self, config: MeshConfig, clock: Callable[[], float] = time.monotonic, resolver: Resolver = resolve_dns) -> None:
        self.clock = clock
        self.resolver = resolver
        self.changed = asyncio.Event()  # set when any replica's health or any tier's replica set changes
        self.tiers = {s.name: Tier(s, config, clock, self.changed, resolver) for s in config.tiers}
        self._started = False

    def start(self) -> None:
        self._started = True
        for t in self.tiers.values():
            t.start()

    def swap(self, config: MeshConfig) -> list[Tier]:
        """Follow a new config at once: keep tiers by name (replicas whose address stays keep their state),
        open new ones. Returns the tiers dropped; close them with `retire` (their open streams end with them)."""
        old = self.tiers
        new: dict[str, Tier] = {}
        for spec in config.tiers:
            t = old.get(spec.name)
            if t is not None:
                t.reconfigure(spec, config)
            else:
                t = Tier(spec, config, self.clock, self.changed, self.resolver)
                if self._started:
                    t.start()
            new[spec.name] = t
        self.tiers = new
        self.changed.set()
        return [t for name, t in old.items() if new.get(name) is not t]

    @staticmethod
    async def retire(gone: list[Tier]) -> None:
        await asyncio.gather(*(t.close() for t in gone))

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.tiers.values()))
