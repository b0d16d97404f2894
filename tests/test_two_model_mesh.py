"""The default mesh (mesh.yaml) on the real engine: both bundled models start from its serve blocks and
answer through a router, pinned to each (SmolLM2 with its chat template, Gemma 3 through its prompt_template)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clients import AsyncClient
from launcher.process import free_port, stop_all, tier_process
from mesh.config import load_mesh
from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc
from router.server import RouterServer
from tests.harness import REPO

pytestmark = pytest.mark.engine

QUESTION = "What is the capital of France?"
CHAT = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def models():
    """Both bundled models, converted once (Gemma: a few minutes the first time)."""
    from tier_server.prepare import MODELS_DIR, prepare

    return {name: prepare(REPO / MODELS_DIR / name, model=name) for name in ("smollm2-135m-instruct", "gemma-3-270m")}


@pytest.fixture(scope="module")
async def mesh(models, tmp_path_factory):
    """mesh.yaml's tiers on free ports (no metrics ports), started in parallel, and an in-process router."""
    config = load_mesh(REPO / "mesh.yaml")
    tiers = [
        t.model_copy(update={"address": f"127.0.0.1:{free_port()}", "serve": t.serve.model_copy(update={"metrics_port": None})})
        for t in config.tiers
    ]
    logs = tmp_path_factory.mktemp("two-model-mesh")
    started = time.monotonic()
    servers = [tier_process(t, log=logs / f"{t.name}.log").start() for t in tiers]
    router = None
    try:
        start_s = {}
        for tier, server in zip(tiers, servers):
            await asyncio.to_thread(server.wait_serving, 300)
            start_s[tier.name] = time.monotonic() - started
        print(f"\ntiers SERVING after (started together): {', '.join(f'{k} {v:.0f} s' for k, v in start_s.items())}")
        router = RouterServer(config.model_copy(update={"tiers": tiers}))
        port = await router.start("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(address) as ch:  # until the router has seen every tier SERVING
            stub = router_service_pb2_grpc.RouterServiceStub(ch)
            for _ in range(200):
                listed = (await stub.ListTiers(pb.ListTiersRequest())).tiers
                if all(t.health == pb.HEALTH_STATE_SERVING for t in listed):
                    break
                await asyncio.sleep(0.05)
        yield address, [t.name for t in tiers]
    finally:
        if router is not None:
            await router.stop(0)
        await asyncio.to_thread(stop_all, servers)


async def test_each_model_answers_the_capital_question_when_pinned(mesh):
    """Pinned to each tier, a chat request is answered with Paris by that tier's model (Gemma, a base model,
    through its prompt_template), and Gemma answers a raw prompt too, stopping before a next question."""
    address, names = mesh
    async with AsyncClient(address) as client:
        answers = {}
        for name in names:
            answers[name] = await client.complete(messages=CHAT, tier=name, max_tokens=24, temperature=0)
        gemma = next(n for n in names if n.startswith("gemma"))
        raw = await client.complete(QUESTION, tier=gemma, max_tokens=24, temperature=0)
    print("\n" + "\n".join(f"{n}: {d.text!r}" for n, d in answers.items()) + f"\n{gemma} (raw prompt): {raw.text!r}")
    for name, done in [*answers.items(), (gemma, raw)]:
        assert done.tier == name and done.usage.completion_tokens > 0
        assert "Paris" in done.text
        assert "Question:" not in done.text


async def test_the_two_models_are_really_different(mesh):
    """The tiers report different models, so a routed lattice has two real choices."""
    address, names = mesh
    async with AsyncClient(address) as client:
        served = {name: (await client.complete(messages=CHAT, tier=name, max_tokens=4, temperature=0)).model for name in names}
    assert len(set(served.values())) == 2, served


async def test_eight_streams_on_each_tier_for_a_throughput_figure(mesh):
    """8 concurrent 32-token greedy streams per tier all finish; prints the tier's tokens per second."""
    address, names = mesh
    async with AsyncClient(address) as client:
        for name in names:
            t0 = time.monotonic()
            done = await asyncio.gather(*(
                client.complete(messages=[{"role": "user", "content": f"Write a sentence about the number {i}."}],
                                tier=name, max_tokens=32, temperature=0)
                for i in range(8)
            ))
            seconds = time.monotonic() - t0
            tokens = sum(d.usage.completion_tokens for d in done)
            assert all(d.text.strip() for d in done)
            print(f"{name}: 8 streams, {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s")


def test_the_converted_gemma_adds_bos_and_stops_on_its_end_ids(models):
    """Gemma's folder has the tokenizer.json the router counts with, which adds <bos> (id 2; without it the
    model answers junk), no chat template, and end-of-turn (106) and <eos> (1) as stop ids."""
    import json

    from tokenizers import Tokenizer

    folder = models["gemma-3-270m"]
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).encode("Question: hi").ids[0] == 2
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [1, 106]
