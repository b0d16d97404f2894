"""Start and stop the router: backends, health and load watching, readiness, hot reload, RouterService."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from mesh.memory import release_after_spikes
from mesh.server import SERVER_OPTIONS, MeshServer
from qarr.v1 import router_service_pb2
from router.auth import TokenInterceptor, TokenVerifier
from router.backends import BackendPool, Resolver, resolve_dns
from mesh.config import MeshConfig
from router.profiles import Profiles
from router.core import Router
from router.grpc_service import RouterService, handlers
from router.http.server import HttpServer
from router.reload import Reloader
from router.telemetry import RouterTelemetry, prices_from
from mesh.observability import MetricsServer, start_metrics_server

log = logging.getLogger("qarr.router")
# Settings a hot reload does not change (the listener and credentials are set up once, at start).
RESTART_ONLY = ("listen", "tls", "upstream_tls", "auth", "reflection", "health_listen", "http")
# A drain cuts the streams still open this long before its grace ends: time for each to send its last
# message (the count delivered) and status before gRPC cancels whatever is left.
CUT_MARGIN_S = 0.25
SERVICE = router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServer:
    def __init__(
        self, config: MeshConfig, profiles: Profiles | None = None, config_path: str | Path | None = None, *,
        tracer_provider=None, resolver: Resolver = resolve_dns, reuse_port: bool = False, metrics: bool = True,
    ) -> None:
        """`config_path`: the file `config` came from; when given, edits to it (and to its profiles file) apply live.
        `tracer_provider`: an OpenTelemetry provider when tracing is on (None: no spans at all).
        `resolver`: how `dns:` tiers find their replicas (tests inject one).
        `reuse_port`: share the listening port with other router processes (SO_REUSEPORT; `--workers`).
        `metrics`: serve /metrics when the config says so (a worker leaves it to its parent)."""
        self.config = config
        profiles = profiles or Profiles()
        self.pool = BackendPool(config, resolver=resolver)
        self.serve_metrics = metrics
        # Observability: metrics, traces (when a provider is given), the per-request log line.
        obs = config.observability
        self.tracer_provider = tracer_provider
        self.telemetry = RouterTelemetry(
            prices=prices_from(config.tiers, profiles), log_prompts=obs.log_prompts,
            tracer=tracer_provider.get_tracer("qarr.router") if tracer_provider is not None else None,
        )
        self.telemetry.declare_tiers(self.pool.tiers)
        self.metrics: MetricsServer | None = None
        self._pool_mirror: asyncio.Task | None = None
        self.router = Router(self.pool, config, profiles, self.telemetry)
        # Security (docs/security.md): tokens and certificates are read here, once.
        self.verifier = TokenVerifier.from_config(config.auth) if config.auth is not None else None
        interceptors = [TokenInterceptor(self.verifier)] if self.verifier is not None else []
        options = [o for o in SERVER_OPTIONS if o[0] != "grpc.so_reuseport"] + [("grpc.so_reuseport", int(reuse_port))]
        self.mesh = MeshServer([SERVICE], options, tls=config.tls, reflection=config.reflection, interceptors=interceptors,
                               health_address=config.health_listen)
        self.mesh.server.add_generic_rpc_handlers((handlers(RouterService(self.router)),))
        self.reloader = (
            Reloader(config_path, config.profiles, self._apply, config.reload_interval_s, profiles.predictor_path)
            if config_path else None
        )
        self._reload_task: asyncio.Task | None = None
        self._readiness_task: asyncio.Task | None = None
        self._memory_task: asyncio.Task | None = None
        self._stall_task: asyncio.Task | None = None
        self.serving = False
        # The OpenAI-compatible HTTP door (router/http/): same core, own port; its health mirrors gRPC's.
        # With auth on it takes the same bearer tokens (the verifier's check), with tls the same certificate.
        self.http = HttpServer(
            self.router, config.http, serving=lambda: self.serving,
            caller_of=self.verifier.caller if self.verifier is not None else None, tls=config.tls,
        ) if config.http.enabled else None
        self.http_port: int | None = None

    async def start(self, address: str | None = None, wait_ready_s: float = 0.0) -> int:
        """Start watching the tiers and listen. `wait_ready_s`: first wait up to this long for some tier to be
        SERVING (a worker sharing its port: the kernel hands it connections as soon as it listens)."""
        self.pool.start()
        self._pool_mirror = asyncio.create_task(self.telemetry.watch_pool(self.pool), name="telemetry-pool")
        obs = self.config.observability
        if obs.metrics_port is not None and self.serve_metrics:
            self.metrics = start_metrics_server(self.telemetry.registry, obs.metrics_host, obs.metrics_port)
            log.info("router metrics on http://%s:%d/metrics", obs.metrics_host, self.metrics.port)
        if self.reloader:
            self._reload_task = asyncio.create_task(self.reloader.run(), name="config-reload")
        if wait_ready_s > 0:
            deadline = asyncio.get_running_loop().time() + wait_ready_s
            while not self.router.ready() and asyncio.get_running_loop().time() < deadline:
                self.pool.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.pool.changed.wait(), 0.05)
        port = await self.mesh.start(address or self.config.listen)
        if self.http is not None:
            self.http_port = await self.http.start()
        self._readiness_task = asyncio.create_task(self._follow_readiness(), name="readiness")
        # After a burst of streams, give the memory they held back to the OS (mesh/memory.py).
        self._memory_task = asyncio.create_task(
            release_after_spikes(lambda: self.router.in_flight, self.router.take_peak_in_flight), name="release-memory"
        )
        self._stall_task = asyncio.create_task(self._cut_stalled_streams(), name="stalled-streams")
        log.info("router listening on port %d with tiers %s", port, list(self.pool.tiers))
        return port

    async def _apply(self, config: MeshConfig, profiles: Profiles) -> None:
        """A reloaded config, less what only a restart changes: the listener, its TLS and tokens, the
        tiers' TLS (kept as they started, with a warning when the file says otherwise)."""
        running = {key: getattr(self.config, key) for key in RESTART_ONLY}
        changed = [key for key, value in running.items() if getattr(config, key) != value]
        if changed:
            log.warning("config reload: %s change only on restart; keeping the running ones", ", ".join(changed))
        await self.router.apply(config.model_copy(update=running), profiles)

    async def _cut_stalled_streams(self) -> None:
        """Every quarter of stalled_stream_s (at most 1 s): end the streams of tiers that stopped answering."""
        while True:
            stall_s = self.router.config.stalled_stream_s
            await asyncio.sleep(min(1.0, stall_s / 4))
            cut = self.router.cut_stalled(time.monotonic(), stall_s)
            if cut:
                log.warning("cut %d streams stalled on tiers that stopped answering", cut)

    async def _cut_streams_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        cut = self.router.cut_streams()
        if cut:
            log.warning("router drain: grace over, cut %d streams still open", cut)

    async def _follow_readiness(self) -> None:
        """Health SERVING only while some tier can take a request (router.ready()); re-checked on every
        tier health change and at least every quarter of the health interval (breakers reopen by time)."""
        while True:
            ready = self.router.ready()
            if ready != self.serving:
                self.serving = ready
                await self.mesh.set_health(ready)
                log.info("router is %s", "SERVING" if ready else "NOT_SERVING (no tier can take a request)")
            self.pool.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.pool.changed.wait(), min(0.25, self.router.config.health_interval_s / 4))

    async def _stop_http(self, grace: float, notice: float) -> None:
        if self.http is not None:
            await asyncio.sleep(notice)  # keep answering (health: NOT_SERVING) while balancers notice
            await self.http.stop(grace)

    async def stop(self, grace: float, notice: float = 0.0) -> None:
        """Drain: NOT_SERVING for `notice` seconds, then streams in flight get `grace` seconds; the ones still
        open just before it ends are cut by the router, so their callers learn how many tokens they got."""
        for task in (self._reload_task, self._readiness_task, self._memory_task, self._stall_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.serving = False  # HTTP /health and /ready say NOT_SERVING from now on, as gRPC health does
        cutter = asyncio.create_task(self._cut_streams_after(notice + grace - min(CUT_MARGIN_S, grace / 2)))
        await asyncio.gather(self.mesh.stop(grace, notice), self._stop_http(grace, notice))
        cutter.cancel()
        if self._pool_mirror is not None:
            self._pool_mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_mirror
        await self.pool.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes; blocks while a collector is down
