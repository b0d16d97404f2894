"""A router and two fake tiers in this process, each with /metrics on a free port and an in-memory span exporter."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from mesh.observability import ObservabilityConfig, tracer_provider
from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc
from mesh.config import MeshConfig, TierSpec
from router.server import RouterServer
from tests.harness import free_port
from tier_server.fake_engine import FakeEngine
from tier_server.server import TierServer

PRICES = {"a": 0.5, "b": 2.0}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics and index every sample by (name, sorted labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; KeyError (with the names that do exist) when absent."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        near = sorted({k for k in samples if k[0] == name})
        raise KeyError(f"{key} not scraped; samples of {name}: {near}")
    return samples[key]


@dataclass
class Mesh:
    router: RouterServer
    tiers: dict[str, TierServer]
    engines: dict[str, FakeEngine]
    address: str
    router_spans: InMemorySpanExporter | None = None
    tier_spans: InMemorySpanExporter | None = None
    channel: grpc.aio.Channel | None = None
    stub: object = field(default=None)

    async def scrape_router(self) -> dict:
        return await asyncio.to_thread(scrape, self.router.metrics.port)

    async def scrape_tier(self, name: str) -> dict:
        return await asyncio.to_thread(scrape, self.tiers[name].metrics.port)

    async def generate(self, prompt: str = "tell me a story", tier: str = "", max_tokens: int = 4, budget_ms: int = 0, request_id: str = ""):
        """One Generate call to the end; returns the list of response messages."""
        request = pb.GenerateRequest(prompt=prompt, request_id=request_id)
        request.sampling.max_tokens = max_tokens
        request.routing.tier = tier
        request.routing.latency_budget_ms = budget_ms
        return [m async for m in self.stub.Generate(request, timeout=10)]

    async def wait_router_sees(self, tier: str, serving: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        # The router's backend first, then the telemetry's mirror of it (polled every 0.25 s).
        while self.router.pool.tiers[tier].serving is not serving or self.router.telemetry.tier_health().get(tier) is not serving:
            if time.monotonic() > deadline:
                raise TimeoutError(f"router never saw tier {tier} serving={serving}")
            await asyncio.sleep(0.02)


async def start_mesh(*, tracing: bool = False, router_tracing: bool | None = None, log_prompts: bool = False, token_delay_s: float = 0.0) -> Mesh:
    router_tracing = tracing if router_tracing is None else router_tracing
    router_spans = InMemorySpanExporter() if router_tracing else None
    tier_spans = InMemorySpanExporter() if tracing else None
    engines = {"a": FakeEngine(token_delay_s=token_delay_s), "b": FakeEngine(token_delay_s=token_delay_s)}
    tiers: dict[str, TierServer] = {}
    specs = []
    for name, engine in engines.items():
        provider = tracer_provider("qarr-tier", exporter=tier_spans, **{"qarr.tier": name}) if tracing else None
        server = TierServer(engine, name, "fake", metrics_port=0, tracer_provider=provider)
        port = await server.start("127.0.0.1:0")
        tiers[name] = server
        specs.append(TierSpec(name=name, address=f"127.0.0.1:{port}", cost_per_million_tokens=PRICES[name]))
    address = f"127.0.0.1:{free_port()}"
    config = MeshConfig(listen=address, tiers=specs, observability=ObservabilityConfig(metrics_port=0, log_prompts=log_prompts))
    router = RouterServer(config, tracer_provider=tracer_provider("qarr-router", exporter=router_spans) if router_tracing else None)
    await router.start()
    mesh = Mesh(router, tiers, engines, address, router_spans, tier_spans)
    mesh.channel = grpc.aio.insecure_channel(address)
    mesh.stub = router_service_pb2_grpc.RouterServiceStub(mesh.channel)
    for name in tiers:
        await mesh.wait_router_sees(name, True)
    return mesh


async def stop_mesh(mesh: Mesh) -> None:
    await mesh.channel.close()
    await mesh.router.stop(0)
    for server in mesh.tiers.values():
        await server.stop(0)


@pytest.fixture
async def mesh():
    m = await start_mesh()
    yield m
    await stop_mesh(m)


@pytest.fixture
async def traced_mesh():
    m = await start_mesh(tracing=True)
    yield m
    await stop_mesh(m)
