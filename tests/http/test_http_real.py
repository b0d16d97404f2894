"""The HTTP door over a real vLLM CPU tier: the openai Python SDK and the openai npm package stream "Paris", usage
equals the engine's own counts, models and 404 behave, and a disconnect frees the engine within 1 s."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time

import httpx
import openai
import pytest

from qarr.v1 import common_pb2, tier_service_pb2, tier_service_pb2_grpc
from tests.harness import REPO
from tests.router.routing_helpers import Router

import grpc

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NODE_PACKAGE = REPO / "tests" / "http_node"


async def direct(tier: tier_service_pb2_grpc.TierServiceStub, max_tokens: int) -> tuple[str, common_pb2.Usage]:
    """The same question straight to the tier (no router): its text and usage, as the engine counts them."""
    req = tier_service_pb2.TierServiceGenerateRequest(
        messages=[common_pb2.ChatMessage(**m) for m in QUESTION],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    text, usage = [], None
    async for msg in tier.Generate(req, timeout=120):
        text.append(msg.text)
        if msg.finish_reason:
            usage = msg.usage
    return "".join(text), usage


async def running(tier: tier_service_pb2_grpc.TierServiceStub) -> int:
    load = (await tier.GetLoad(tier_service_pb2.GetLoadRequest(), timeout=5)).load
    return load.running_requests + load.waiting_requests


async def test_openai_sdks_through_the_http_door_on_a_real_tier(started, tmp_path, real_tier, bundled_model):
    """Python SDK: streams "Paris" with usage equal to the engine's counts and [DONE] on the wire; models.list() lists
    the tier; a pinned unknown model is 404; a client that disconnects mid-stream frees the engine (running back to
    0 within 1 s). Then the openai npm package does the same stream, list and 404 (skipped without node)."""
    tiers = [{"name": "bf16", "address": real_tier, "model": str(bundled_model), "quantization": "bf16", "max_model_len": 1024}]
    router = await started(Router(tmp_path, tiers, {}, http={"enabled": True, "listen": "127.0.0.1:0"}))
    await router.wait_serving("bf16")
    base_url = f"http://127.0.0.1:{router.server.http_port}/v1"
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    async with grpc.aio.insecure_channel(real_tier) as channel:
        tier = tier_service_pb2_grpc.TierServiceStub(channel)
        expected_text, expected_usage = await direct(tier, 24)

        stream = await client.chat.completions.create(model="auto", messages=QUESTION, max_tokens=24, temperature=0,
                                                      stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" in text, text
        assert text == expected_text
        usage = chunks[-1].usage
        assert (usage.prompt_tokens, usage.completion_tokens) == (expected_usage.prompt_tokens, expected_usage.completion_tokens)
        assert chunks[-2].qarr["tier"] == "bf16" and chunks[-2].qarr["quantization"] == "bf16"
        print(f"\npython stream: {text!r}, usage {usage.prompt_tokens}+{usage.completion_tokens} (engine: same)")

        async with httpx.AsyncClient(timeout=120) as http:
            async with http.stream("POST", f"{base_url}/chat/completions", json={
                    "model": "bf16", "messages": QUESTION, "max_tokens": 8, "stream": True}) as r:
                raw = (await r.aread()).decode()
        assert r.headers["x-qarr-tier"] == "bf16" and raw.endswith("data: [DONE]\n\n")

        assert [m.id for m in (await client.models.list()).data] == ["auto", "bf16"]
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="bf17", messages=QUESTION)

        # Disconnect mid-stream: the engine request is aborted.
        story = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
        async with httpx.AsyncClient(timeout=120) as http:
            async with http.stream("POST", f"{base_url}/chat/completions", json={
                    "model": "auto", "messages": story, "max_tokens": 512, "stream": True}) as r:
                lines = r.aiter_lines()
                while not (await anext(lines)).startswith("data: {"):
                    pass
                assert await running(tier) == 1
        gone_at = time.monotonic()
        while await running(tier):
            assert time.monotonic() - gone_at < 1.0, "the engine still runs the request 1 s after the client left"
            await asyncio.sleep(0.01)
        print(f"disconnect -> engine running 0 after {(time.monotonic() - gone_at) * 1000:.0f} ms")

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH: the openai npm package part needs Node 20+")
    env = {**os.environ, "QARR_PYTHON": sys.executable, "QARR_HTTP_BASE_URL": base_url, "QARR_TIER": "bf16"}
    for argv in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "test:real"]):
        proc = await asyncio.create_subprocess_exec(*argv, cwd=NODE_PACKAGE, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 600))[0].decode()
        assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{out[-8000:]}"
    assert "# pass 2" in out and "# fail 0" in out, out[-4000:]
    print(next((line for line in out.splitlines() if "node stream" in line), ""))
