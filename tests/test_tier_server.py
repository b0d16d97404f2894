"""The tier server over the engine seam (fake engine): readiness, errors, drain."""

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import free_port, start_tier_process
from mesh.status import reason_of
from qarr.v1 import common_pb2, tier_service_pb2 as tpb, tier_service_pb2_grpc
from tier_server.fake_engine import FakeEngine
from tier_server.server import TierServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SlowStartEngine(FakeEngine):
    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()

    async def start(self):
        await self.release.wait()
        await super().start()


async def health_of(channel) -> int:
    return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)).status


async def test_health_is_not_serving_until_the_engine_has_started_and_warmed_up():
    """Health answers NOT_SERVING while the engine loads, SERVING only after the warm-up request."""
    engine = SlowStartEngine()
    server = TierServer(engine, "slow", "bf16")
    port = free_port()
    starting = asyncio.create_task(server.start(f"127.0.0.1:{port}"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for _ in range(100):
                try:
                    status = await health_of(ch)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.02)
            assert status == NOT_SERVING
            engine.release.set()
            await starting
            assert await health_of(ch) == SERVING
            assert engine.aborted == []  # the warm-up ran to completion
    finally:
        await server.stop(0)


@pytest.fixture
async def fake_tier():
    engine = FakeEngine(max_model_len=64)
    server = TierServer(engine, "fake", "bf16")
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield engine, server, channel
    await channel.close()
    await server.stop(0)


async def test_stream_is_text_chunks_then_one_last_message_with_usage(fake_tier):
    """Text arrives in chunks; only the last message carries finish_reason, usage and the tier's identity."""
    engine, _, channel = fake_tier
    stub = tier_service_pb2_grpc.TierServiceStub(channel)
    msgs = [m async for m in stub.Generate(tpb.TierServiceGenerateRequest(prompt="a b c", sampling=common_pb2.SamplingParams(max_tokens=4)))]
    assert [m.finish_reason for m in msgs[:-1]] == [0, 0, 0, 0] and all(m.text for m in msgs[:-1])
    last = msgs[-1]
    assert (last.text, last.finish_reason, last.tier, last.quantization) == ("", common_pb2.FINISH_REASON_LENGTH, "fake", "bf16")
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.generated_tokens) == (3, 4, 4)


async def test_invalid_sampling_and_too_long_prompt_are_invalid_argument(fake_tier):
    """Bad values and prompts longer than max_model_len fail with INVALID_ARGUMENT and a clear message."""
    _, _, channel = fake_tier
    stub = tier_service_pb2_grpc.TierServiceStub(channel)
    cases = [
        (tpb.TierServiceGenerateRequest(prompt="x", sampling=common_pb2.SamplingParams(temperature=9)), "temperature"),
        (tpb.TierServiceGenerateRequest(prompt="w " * 100), "longer than this tier's max_model_len of 64"),
        (tpb.TierServiceGenerateRequest(), "prompt or messages is required"),
    ]
    for request, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.Generate(request):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in err.value.details()
        assert reason_of(err.value.trailing_metadata()) == "INVALID_REQUEST"


async def test_a_dead_engine_turns_health_not_serving_and_calls_unavailable(fake_tier):
    """Once the engine dies the watchdog flips health and Generate fails UNAVAILABLE."""
    engine, _, channel = fake_tier
    engine.die()
    stub = tier_service_pb2_grpc.TierServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Generate(tpb.TierServiceGenerateRequest(prompt="hi")):
            pass
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(err.value.trailing_metadata()) == "ENGINE_DEAD"
    for _ in range(50):
        if await health_of(channel) == NOT_SERVING:
            break
        await asyncio.sleep(0.05)
    assert await health_of(channel) == NOT_SERVING


async def test_cancelling_a_call_aborts_the_engine_request(fake_tier):
    """A client cancel reaches the engine: its generator is closed and running drops to 0."""
    engine, _, channel = fake_tier
    engine.token_delay_s = 0.01
    stub = tier_service_pb2_grpc.TierServiceStub(channel)
    call = stub.Generate(tpb.TierServiceGenerateRequest(prompt="hi", request_id="r-cancel", sampling=common_pb2.SamplingParams(max_tokens=50)))
    await call.read()
    assert engine.running == 1
    call.cancel()
    t0 = time.monotonic()
    while engine.running and time.monotonic() - t0 < 1:
        await asyncio.sleep(0.005)
    assert engine.running == 0 and "r-cancel" in engine.aborted
    load = await tier_service_pb2_grpc.TierServiceStub(channel).GetLoad(tpb.GetLoadRequest())
    assert load.load.running_requests == 0


def test_sigterm_drains_in_flight_streams_then_exits():
    """On SIGTERM health goes NOT_SERVING, a stream in flight still completes, and the process exits 0."""
    proc = start_tier_process("drain", "--engine", "fake", "--fake-token-delay-ms", "20", "--grace-seconds", "5")
    try:
        proc.wait_serving(timeout=30)
        with grpc.insecure_channel(proc.address) as ch:
            stream = tier_service_pb2_grpc.TierServiceStub(ch).Generate(
                tpb.TierServiceGenerateRequest(prompt="hi", sampling=common_pb2.SamplingParams(max_tokens=50)), timeout=20
            )
            first = next(stream)
            proc.terminate()
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 2
            status = SERVING
            while time.monotonic() < deadline and status == SERVING:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            assert status == NOT_SERVING
            rest = list(stream)
        assert first.text and rest[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
        assert rest[-1].usage.completion_tokens == 50
        assert proc.wait_exit(timeout=15) == 0
    finally:
        proc.stop()
