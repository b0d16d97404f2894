"""End to end on the real engine: CLI/SDK -> router -> tier server -> vLLM (CPU build, bundled model)."""

import asyncio
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from clients import AsyncClient, InvalidRequest
from tests.harness import REPO, subprocess_env
from qarr.v1 import common_pb2, router_service_pb2 as pb, router_service_pb2_grpc, tier_service_pb2, tier_service_pb2_grpc
from mesh.config import MeshConfig, TierSpec
from router.server import RouterServer

pytestmark = pytest.mark.engine

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
FRANCE_TURNS = [common_pb2.ChatMessage(**m) for m in FRANCE]


@pytest.fixture(scope="session")
async def router(real_tier, bundled_model):
    """A real router in this process, in front of the real bf16 tier; it counts prompts with the tier's tokenizer."""
    tier = TierSpec(name="bf16", address=real_tier, quantization="bf16", max_model_len=1024, model=str(bundled_model))
    server = RouterServer(MeshConfig(tiers=[tier]))
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as ch:  # wait until the router has seen the tier SERVING
        stub = router_service_pb2_grpc.RouterServiceStub(ch)
        for _ in range(100):
            tiers = (await stub.ListTiers(pb.ListTiersRequest())).tiers
            if tiers[0].health == pb.HEALTH_STATE_SERVING:
                break
            await asyncio.sleep(0.05)
    yield address
    await server.stop(0)


async def engine_unfinished(tier_address: str) -> int:
    async with grpc.aio.insecure_channel(tier_address) as ch:
        load = (await tier_service_pb2_grpc.TierServiceStub(ch).GetLoad(tier_service_pb2.GetLoadRequest())).load
        return load.running_requests + load.waiting_requests


async def wait_engine_idle(tier_address: str, within: float) -> float:
    t0 = time.monotonic()
    while await engine_unfinished(tier_address):
        assert time.monotonic() - t0 < within, f"engine still busy after {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_answer_streams_through_the_router_in_several_chunks(router):
    """The capital question streams back in pieces and the text names Paris."""
    async with AsyncClient(router) as client:
        chunks = [c async for c in client.generate(messages=FRANCE, max_tokens=24, temperature=0)]
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    assert len([c for c in chunks if c.text]) >= 3
    last = chunks[-1]
    assert (last.tier, last.quantization, last.finish_reason) == ("bf16", "bf16", "stop")
    assert last.routing_reason


async def test_usage_equals_the_engine_tokenizers_counts(router, bundled_model):
    """prompt_tokens is the chat-templated prompt's token count and completion_tokens the tokens of the text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bundled_model))
    async with AsyncClient(router) as client:
        done = await client.complete(messages=FRANCE, max_tokens=24, temperature=0)
    templated = tok.apply_chat_template(FRANCE, tokenize=False, add_generation_prompt=True)
    assert done.usage.prompt_tokens == len(tok.encode(templated, add_special_tokens=False))
    # The finishing EOS token counts but produces no text.
    assert done.usage.completion_tokens == len(tok.encode(done.text, add_special_tokens=False)) + 1


async def test_hitting_max_tokens_finishes_with_length(router):
    """A generation cut by max_tokens ends with finish_reason LENGTH and exactly max_tokens tokens."""
    async with AsyncClient(router) as client:
        done = await client.complete("1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=7, temperature=0)
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 7


async def test_cancelling_mid_stream_frees_the_engine_within_one_second(router, real_tier):
    """A caller that cancels after a few chunks leaves the engine with no running request within 1 s."""
    async with grpc.aio.insecure_channel(router) as ch:
        call = router_service_pb2_grpc.RouterServiceStub(ch).Generate(
            pb.GenerateRequest(prompt="Count from one to a thousand:", sampling=common_pb2.SamplingParams(max_tokens=900, temperature=0))
        )
        for _ in range(3):
            await call.read()
        assert await engine_unfinished(real_tier) == 1
        call.cancel()
        freed = await wait_engine_idle(real_tier, within=1.0)
    print(f"engine freed {freed * 1000:.0f} ms after cancel")


async def test_deadline_propagates_to_the_tier_and_frees_the_engine(router, real_tier):
    """A short deadline ends the call DEADLINE_EXCEEDED and the engine request is aborted too."""
    async with AsyncClient(router) as client:
        with pytest.raises(Exception) as err:
            async for _ in client.generate("Count from one to a thousand:", max_tokens=900, temperature=0, timeout=0.6):
                pass
    assert type(err.value).__name__ == "DeadlineExceeded"
    await wait_engine_idle(real_tier, within=1.0)


async def test_too_long_prompt_is_invalid_argument_with_the_limit_in_the_message(router, real_tier):
    """A prompt beyond the context length is refused with INVALID_ARGUMENT naming the limit, by the router
    (counted with the model's tokenizer) and by the tier itself when called directly."""
    async with AsyncClient(router) as client:
        with pytest.raises(InvalidRequest) as err:
            await client.complete("paris " * 1500, max_tokens=4)
    assert "max_model_len 1024" in err.value.message and "does not fit" in err.value.message
    async with grpc.aio.insecure_channel(real_tier) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as direct:
            async for _ in tier_service_pb2_grpc.TierServiceStub(ch).Generate(
                tier_service_pb2.TierServiceGenerateRequest(prompt="paris " * 1500, sampling=common_pb2.SamplingParams(max_tokens=4))
            ):
                pass
    assert direct.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than this tier's max_model_len of 1024" in direct.value.details()


async def test_pinning_an_unknown_tier_is_invalid_argument_listing_known_tiers(router):
    """routing.tier naming no tier fails with INVALID_ARGUMENT and says which tiers exist."""
    async with AsyncClient(router) as client:
        with pytest.raises(InvalidRequest) as err:
            await client.complete("hi", tier="gpu-h100", max_tokens=4)
    assert "'gpu-h100' is not a known tier" in err.value.message and "bf16" in err.value.message


def reflect_and_generate(router: str) -> tuple[set[str], str]:
    with grpc.insecure_channel(router) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        method = pool.FindServiceByName("qarr.v1.RouterService").methods_by_name["Generate"]
        Request = message_factory.GetMessageClass(method.input_type)
        Response = message_factory.GetMessageClass(method.output_type)
        request = Request()
        turn = request.messages.add()
        turn.role, turn.content = "user", "What is the capital of France?"
        request.sampling.temperature = 0
        generate = channel.unary_stream("/qarr.v1.RouterService/Generate", request_serializer=Request.SerializeToString, response_deserializer=Response.FromString)
        text = "".join(m.text for m in generate(request, timeout=60))
    return services, text


# The router runs on this test's event loop: blocking clients go to a thread.
async def test_reflection_alone_is_enough_to_list_services_and_call_generate(router):
    """Like grpcurl without proto files: list services and call Generate from reflected descriptors."""
    services, text = await asyncio.to_thread(reflect_and_generate, router)
    assert {"qarr.v1.RouterService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert "Paris" in text


async def test_cli_streams_the_answer(router):
    """`qarr generate "What is the capital of France?"` prints an answer naming Paris."""
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "clients.cli", "generate", "What is the capital of France?", "--target", router],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "tier=bf16" in out.stderr


# --- The real tier under hostile input (issue 14): only OK or INVALID_ARGUMENT, never UNKNOWN/INTERNAL ----

TierRequest = tier_service_pb2.TierServiceGenerateRequest
HOSTILE = [
    ("NaN temperature", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(temperature=float("nan"))), "INVALID_ARGUMENT"),
    ("-inf top_p", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(top_p=float("-inf"))), "INVALID_ARGUMENT"),
    ("subnormal temperature", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(temperature=1e-45, max_tokens=2)), "OK"),
    ("subnormal top_p", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(top_p=1e-45, max_tokens=2)), "OK"),
    ("largest seed", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(seed=2**63 - 1, max_tokens=2)), "OK"),
    ("u64 seed", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(seed=2**64 - 1)), "INVALID_ARGUMENT"),
    ("top_k past the vocabulary", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(top_k=2**31 - 1, max_tokens=2)), "OK"),
    ("16 stops of 256 bytes", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(stop=["z" * 256] * 16, max_tokens=2)), "OK"),
    ("16 stops of 20 KB", TierRequest(prompt="hi", sampling=common_pb2.SamplingParams(stop=["z" * 20_000] * 16)), "INVALID_ARGUMENT"),
    ("NUL and unicode", TierRequest(prompt="\x00\u202e\U0001f600 naïve \x00", sampling=common_pb2.SamplingParams(max_tokens=2)), "OK"),
    ("unknown role", TierRequest(messages=[common_pb2.ChatMessage(role="root", content="hi")]), "INVALID_ARGUMENT"),
    ("1 MB request id", TierRequest(prompt="hi", request_id="r" * 1_000_000), "INVALID_ARGUMENT"),
    ("3.9 MB prompt", TierRequest(prompt="paris " * 650_000), "INVALID_ARGUMENT"),
]


async def test_hostile_values_at_the_real_tier_are_served_or_invalid_argument(real_tier):
    """Edge values reach the real vLLM adapter: each is served or refused INVALID_ARGUMENT (never UNKNOWN or
    INTERNAL), big ones within a second, and the tier answers a normal request afterwards."""
    from tests.fuzz import outcome

    def run():
        results = []
        with grpc.insecure_channel(real_tier) as ch:
            for name, request, _ in HOSTILE:
                t0 = time.monotonic()
                code, details, _ = outcome(ch, "/qarr.v1.TierService/Generate", request.SerializeToString(), timeout=60)
                results.append((name, code.name, time.monotonic() - t0, details))
        return results

    results = await asyncio.to_thread(run)
    for (name, code, seconds, details), (_, _, expected) in zip(results, HOSTILE):
        assert code == expected, (name, code, details)
        if code == "INVALID_ARGUMENT":
            assert seconds < 1.0, (name, seconds)
    async with grpc.aio.insecure_channel(real_tier) as ch:
        msgs = [m async for m in tier_service_pb2_grpc.TierServiceStub(ch).Generate(
            TierRequest(messages=FRANCE_TURNS, sampling=common_pb2.SamplingParams(max_tokens=24, temperature=0)))]
    assert "Paris" in "".join(m.text for m in msgs)


async def test_tokenizing_runs_off_the_event_loop():
    """VllmEngine.tokenize hands the tokenizer to a thread: a slow tokenizer does not stop the loop."""
    from tier_server.vllm_engine import VllmEngine, VllmSettings

    class SlowTokenizer:
        def encode(self, text):
            time.sleep(0.5)
            return [1, 2, 3]

    engine = VllmEngine(VllmSettings(model="unused"))
    engine._tokenizer = SlowTokenizer()
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    assert await engine.tokenize("hello") == [1, 2, 3]
    ticker.cancel()
    await engine.shutdown()
    assert ticks >= 5  # a blocked loop would tick at most once
