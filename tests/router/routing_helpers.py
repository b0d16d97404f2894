"""Router test helpers: fake tiers served in-process on free ports, and a router over them
configured from a real YAML file (so hot reload can be exercised)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import yaml

from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc
from router.reload import load_both
from router.server import RouterServer
from tier_server.engine import EngineDead, Load
from tier_server.fake_engine import FakeEngine
from tier_server.server import TierServer

# Fast timings for tests; production defaults are in router/config.py.
TEST_SETTINGS = {
    "health_interval_s": 0.2,
    "health_timeout_s": 0.5,  # a loaded CI machine can take longer than 0.2 s to answer a Check
    "load_interval_s": 0.2,
    "reload_interval_s": 0.1,
    "breaker": {"failure_threshold": 5, "open_base_s": 0.3, "open_max_s": 1.0, "half_open_probes": 2},
    "retry": {"budget_ratio": 0.1, "budget_burst": 100, "backoff_initial_s": 0.005, "backoff_max_s": 0.05},
}


def profile(accuracy: float, ttft_ms: float = 5.0, tps: float = 200.0, cost: float = 1.0) -> dict:
    return {"ttft_ms_p50": ttft_ms, "decode_tps_c1": tps, "decode_tps_cn": tps * 8, "concurrency_n": 8,
            "accuracy": accuracy, "cost_per_million_tokens": cost}


class FlakyEngine(FakeEngine):
    """A FakeEngine whose next `fail_next` requests fail before any token, as UNAVAILABLE,
    while the tier's health stays SERVING (so only call outcomes can steer the router)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_next = 0
        self.calls = 0
        self.kv_cache_usage: float | None = None  # reported instead of the fake's own figure when set

    def load(self) -> Load:
        load = super().load()
        if self.kv_cache_usage is None:
            return load
        return Load(running=load.running, waiting=load.waiting, kv_cache_usage=self.kv_cache_usage)

    async def generate(self, prompt_token_ids, sampling, request_id):
        self.calls += 1
        if self.fail_next > 0 and not request_id.startswith("warmup"):
            self.fail_next -= 1
            raise EngineDead("injected failure before the first token")
        async for delta in super().generate(prompt_token_ids, sampling, request_id):
            yield delta


class FakeTier:
    """A TierServer over a FakeEngine, in this process."""

    def __init__(self, name: str, token_delay_s: float = 0.0, max_model_len: int = 2048, tls=None) -> None:
        self.name = name
        self.tls = tls  # mesh.config.ServerTLS: serve TLS (mutual with a client CA)
        self.token_delay_s = token_delay_s
        self.max_model_len = max_model_len
        self.port = 0
        self.engine: FlakyEngine | None = None
        self.server: TierServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FakeTier:
        """Start (again, on the same port when it ran before) with a fresh engine."""
        self.engine = FlakyEngine(model=f"fake-{self.name}", max_model_len=self.max_model_len, token_delay_s=self.token_delay_s)
        self.server = TierServer(self.engine, self.name, self.name, tls=self.tls)
        self.port = await self.server.start(f"127.0.0.1:{self.port}")
        return self

    async def stop(self, grace: float = 0.0) -> None:
        if self.server:
            await self.server.stop(grace)
            self.server = None


class Router:
    """A RouterServer configured from `dir/router.yaml` and `dir/profiles.yaml`, with a stub to call it."""

    def __init__(self, directory: Path, tiers: list[dict], profiles: dict[str, dict], resolver=None, **settings) -> None:
        """`resolver`: how dns tiers find their replicas (router/backends.py Resolver); default real DNS."""
        self.resolver = resolver
        self.config_path = directory / "router.yaml"
        self.profiles_path = directory / "profiles.yaml"
        self.config_data = {**TEST_SETTINGS, **settings, "profiles": str(self.profiles_path), "tiers": tiers}
        self.profiles_data = {"version": 1, "measured": {"tool": "test"}, "tiers": profiles}
        self.write_profiles()
        self.write_config()
        self.server: RouterServer | None = None

    def write_config(self, text: str | None = None) -> None:
        self.config_path.write_text(text if text is not None else yaml.safe_dump(self.config_data))

    def write_profiles(self) -> None:
        self.profiles_path.write_text(yaml.safe_dump(self.profiles_data))

    async def start(self) -> Router:
        config, profiles = load_both(self.config_path)
        extra = {"resolver": self.resolver} if self.resolver is not None else {}
        self.server = RouterServer(config, profiles, self.config_path, **extra)
        port = await self.server.start("127.0.0.1:0")
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=(("grpc.enable_retries", 0),))
        self.stub = router_service_pb2_grpc.RouterServiceStub(self.channel)
        return self

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)

    @property
    def backends(self):
        """Tiers by name (router/backends.py Tier: aggregates over its replicas)."""
        return self.server.pool.tiers

    def replica(self, tier: str, address: str | None = None):
        """A tier's replica (its only one when `address` is not given)."""
        replicas = self.server.pool.tiers[tier].replicas
        if address is None:
            (only,) = replicas.values()
            return only
        return replicas[address]

    async def tiers(self) -> dict[str, pb.TierInfo]:
        resp = await self.stub.ListTiers(pb.ListTiersRequest(), timeout=5)
        return {t.name: t for t in resp.tiers}

    async def wait_for(self, predicate, timeout: float = 5.0, what: str = "condition") -> float:
        """Poll `predicate()` (sync or async) every 10 ms; returns seconds waited."""
        started = time.monotonic()
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.01)

    async def wait_serving(self, *names: str) -> None:
        await self.wait_for(lambda: all(self.backends[n].serving for n in names), what=f"{names} SERVING")


def tier_entry(tier: FakeTier, **extra) -> dict:
    return {"name": tier.name, "address": tier.address, "model": "", "quantization": tier.name,
            "max_model_len": tier.max_model_len, **extra}


def replicated_entry(name: str, replicas: list[FakeTier], **extra) -> dict:
    """A tier entry listing several replicas (`addresses`)."""
    return {"name": name, "addresses": [r.address for r in replicas], "model": "", "quantization": name,
            "max_model_len": replicas[0].max_model_len, **extra}


def request(prompt: str = "hello there", max_tokens: int = 8, **routing) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=prompt,
        sampling={"max_tokens": max_tokens, "temperature": 1.0},
        routing=pb.RoutingHints(**routing),
    )


async def collect(stub, req: pb.GenerateRequest, timeout: float = 10.0) -> tuple[str, pb.GenerateResponse]:
    """(text, last message) of one Generate call."""
    text, last = [], None
    async for msg in stub.Generate(req, timeout=timeout):
        text.append(msg.text)
        last = msg
    return "".join(text), last
