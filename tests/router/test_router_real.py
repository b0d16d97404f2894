"""One router over the real vLLM CPU tier and a fake tier: policy picks or avoids the real tier,
the context check counts with the real tokenizer, and a cancel aborts the real engine request."""

from __future__ import annotations

import time

import grpc
import pytest

from qarr.v1 import tier_service_pb2, tier_service_pb2_grpc
from tests.router.routing_helpers import FakeTier, Router, collect, profile, request, tier_entry

pytestmark = pytest.mark.engine

PROFILES = {"bf16": profile(0.5, ttft_ms=50, tps=50, cost=1.0), "fake": profile(0.1, ttft_ms=1, tps=1000, cost=0.01)}


async def test_real_tier_chosen_avoided_and_cancelled_through_router(started, tmp_path, real_tier, bundled_model):
    """An accuracy floor sends the call to the real tier, no floor to the cheap fake one; a long prompt is
    counted with the real tokenizer; a cancel at the router aborts the real engine request within 1 s."""
    fake = await started(FakeTier("fake"))
    tiers = [{"name": "bf16", "address": real_tier, "model": str(bundled_model), "max_model_len": 1024}, tier_entry(fake)]
    router = await started(Router(tmp_path, tiers, PROFILES))
    await router.wait_serving("bf16", "fake")

    chat = request("", 16, min_accuracy=0.4)
    chat.messages.add(role="user", content="What is the capital of France?")
    text, last = await collect(router.stub, chat, timeout=60)
    assert (last.tier, last.routing_reason) == ("bf16", "best_utility") and text.strip()
    _, last = await collect(router.stub, request("What is the capital of France?", 16, min_accuracy=0.0, latency_budget_ms=60_000))
    assert last.tier == "fake"

    # 1,920 bytes cannot be proved to fit 1024 tokens by the byte bound; the tokenizer shows ~610 tokens do.
    long_prompt = "The cat sat on the mat. " * 80
    _, last = await collect(router.stub, request(long_prompt, 8, tier="bf16"), timeout=120)
    assert last.usage.prompt_tokens < 1024 - 8
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await collect(router.stub, request(long_prompt * 2, 8, tier="bf16"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_model_len" in e.value.details()

    async with grpc.aio.insecure_channel(real_tier) as channel:
        tier = tier_service_pb2_grpc.TierServiceStub(channel)
        story = request("", 512, min_accuracy=0.4)
        story.messages.add(role="user", content="Write a long story about a dragon who learns to bake bread.")
        call = router.stub.Generate(story, timeout=120)
        assert (await call.read()).text  # streaming, not finished
        load = (await tier.GetLoad(tier_service_pb2.GetLoadRequest(), timeout=5)).load
        assert load.running_requests + load.waiting_requests == 1
        cancelled_at = time.monotonic()
        call.cancel()
        while True:
            load = (await tier.GetLoad(tier_service_pb2.GetLoadRequest(), timeout=5)).load
            took = time.monotonic() - cancelled_at
            if load.running_requests + load.waiting_requests == 0:
                break
            assert took < 1.0, "the real engine still runs the cancelled request after 1 s"
    print(f"\nreal tier: cancel -> engine request gone after {took * 1000:.0f} ms")


async def test_request_without_max_tokens_is_served_when_its_prompt_leaves_100_tokens_of_room(started, tmp_path, real_tier, bundled_model):
    """Router and tier share one default max_tokens (min(256, room)): a prompt of max_model_len - 100 tokens
    with no max_tokens is served (at most 100 tokens), not refused PROMPT_TOO_LONG."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundled_model / "tokenizer.json"))
    words = ["river"] * 900
    while len(tok.encode(" ".join(words)).ids) < 1024 - 100:
        words.append("stone")
    while len(tok.encode(" ".join(words)).ids) > 1024 - 100:
        words.pop()
    prompt = " ".join(words)
    room = 1024 - len(tok.encode(prompt).ids)
    assert 100 <= room <= 102
    router = await started(Router(tmp_path, [{"name": "bf16", "address": real_tier, "model": str(bundled_model), "max_model_len": 1024}], {}))
    await router.wait_serving("bf16")
    req = request(prompt, 1)
    req.sampling.ClearField("max_tokens")
    _, last = await collect(router.stub, req, timeout=180)
    assert last.finish_reason in (1, 2) and 0 < last.usage.completion_tokens <= room
    assert last.usage.prompt_tokens == 1024 - room
    print(f"\nprompt {last.usage.prompt_tokens} tokens, no max_tokens: served {last.usage.completion_tokens} tokens")
