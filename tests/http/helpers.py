"""An in-process mesh for the HTTP door's tests: FakeTiers, a RouterServer with `http.enabled`, and clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai

from tests.router.routing_helpers import FakeTier, Router, profile, tier_entry

ACCURACY = {"a": 0.9, "b": 0.5}
COST = {"a": 2.0, "b": 0.1}


class HttpMesh:
    """Fake tiers (name -> seconds a token) under a router whose HTTP door listens on a free port."""

    def __init__(self, directory: Path, tiers: dict[str, float], tier_extra: dict | None = None, **settings) -> None:
        self.directory = directory
        self.delays = tiers
        self.tier_extra = tier_extra or {}
        self.settings = settings
        self.tiers: dict[str, FakeTier] = {}
        self.router: Router | None = None

    async def start(self) -> HttpMesh:
        for name, delay in self.delays.items():
            self.tiers[name] = await FakeTier(name, token_delay_s=delay).start()
        entries = [tier_entry(t, **self.tier_extra.get(n, {})) for n, t in self.tiers.items()]
        profiles = {n: profile(ACCURACY.get(n, 0.7), cost=COST.get(n, 1.0)) for n in self.tiers}
        http = {"enabled": True, "listen": "127.0.0.1:0", **self.settings.pop("http", {})}
        self.router = await Router(self.directory, entries, profiles, http=http, **self.settings).start()
        await self.router.wait_serving(*self.tiers)
        return self

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.stop()
        for tier in self.tiers.values():
            await tier.stop()

    @property
    def server(self):
        return self.router.server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def engine(self, name: str):
        return self.tiers[name].engine

    def client(self, **kw) -> openai.AsyncOpenAI:
        """The official SDK, async, retries off unless asked for."""
        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=kw.pop("api_key", "unused"),
                                  max_retries=kw.pop("max_retries", 0), **kw)

    def sync_client(self, **kw) -> openai.OpenAI:
        """The official SDK, sync: call it off the event loop (asyncio.to_thread), which serves the router."""
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=kw.pop("api_key", "unused"),
                             max_retries=kw.pop("max_retries", 0), **kw)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)

    async def wait_for(self, predicate, timeout: float = 5.0, what: str = "condition") -> float:
        return await self.router.wait_for(predicate, timeout, what)


async def aborted_within(engine, request_id: str, timeout: float = 1.0) -> float:
    """Seconds until the engine aborted `request_id`; fails after `timeout`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while request_id not in engine.aborted:
        if loop.time() - started > timeout:
            raise AssertionError(f"engine request {request_id} not aborted within {timeout} s")
        await asyncio.sleep(0.002)
    return loop.time() - started


def chat(content: str = "hello there", **kw) -> dict:
    return {"model": kw.pop("model", "auto"), "messages": [{"role": "user", "content": content}], **kw}
