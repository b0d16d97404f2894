"""The tier server over the engine seam (fake engine): readiness, errors, limits, fuzzing, drain."""

import asyncio
import logging
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from mesh.status import reason_of
from qarr.v1 import common_pb2, tier_service_pb2 as tpb, tier_service_pb2_grpc
from tests.fuzz import ALLOWED, generate_requests, outcome, random_bodies
from tests.harness import free_port, start_tier_process
from tier_server.engine import Delta, EngineBusy, EngineDead, EngineError, Finish
from tier_server.fake_engine import FakeEngine
from tier_server.limits import Limits
from tier_server.prompting import PromptFormat
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


# --- Errors: one table, never UNKNOWN -------------------------------------------------------------

GENERATE = "/qarr.v1.TierService/Generate"


class ScriptedEngine(FakeEngine):
    """A FakeEngine whose requests (not the warm-up) raise `fail_with`, or end with `finish`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fail_with: BaseException | None = None
        self.finish = None
        self.last_sampling = None
        self.tokenized: list = []

    async def tokenize(self, prompt):
        self.tokenized.append(prompt)
        return await super().tokenize(prompt)

    async def generate(self, prompt_token_ids, sampling, request_id):
        if request_id.startswith("warmup-"):
            async for d in super().generate(prompt_token_ids, sampling, request_id):
                yield d
            return
        self.last_sampling = sampling
        if self.fail_with is not None:
            raise self.fail_with
        yield Delta(text="partial ", tokens=1, prompt_tokens=len(prompt_token_ids), completion_tokens=1)
        yield Delta(text="", tokens=0, prompt_tokens=len(prompt_token_ids), completion_tokens=1, finish=self.finish)


@pytest.fixture
async def scripted_tier():
    engine = ScriptedEngine(max_model_len=256)
    server = TierServer(engine, "scripted", "bf16", prompt_format=PromptFormat("Q: {prompt}\nA:", ("\nQ:",)))
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield engine, channel
    await channel.close()
    await server.stop(0)


async def call_generate(channel, request) -> list:
    stub = tier_service_pb2_grpc.TierServiceStub(channel)
    return [m async for m in stub.Generate(request)]


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (EngineDead("gone"), grpc.StatusCode.UNAVAILABLE, "ENGINE_DEAD"),
        (EngineBusy("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "ENGINE_BUSY"),
        (EngineError("the engine failed this request"), grpc.StatusCode.INTERNAL, "ENGINE_ERROR"),
        (ValueError("/srv/secret/path.py: bad index"), grpc.StatusCode.INTERNAL, "INTERNAL"),
        (KeyError("bug"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_engine_failures_map_to_their_status_and_internal_ones_are_logged_once(scripted_tier, caplog, error, code, reason):
    """Dead → UNAVAILABLE, busy → RESOURCE_EXHAUSTED, anything else → INTERNAL with a reason and one log line
    holding the traceback; the caller's message never carries the exception text of a bug."""
    engine, channel = scripted_tier
    engine.fail_with = error
    with caplog.at_level(logging.ERROR, logger="qarr.tier"), pytest.raises(grpc.aio.AioRpcError) as err:
        await call_generate(channel, tpb.TierServiceGenerateRequest(prompt="hi", request_id="r-1"))
    assert err.value.code() == code
    assert reason_of(err.value.trailing_metadata()) == reason
    logged = [r for r in caplog.records if r.name == "qarr.tier" and r.levelno >= logging.ERROR]
    if code is grpc.StatusCode.INTERNAL:
        assert len(logged) == 1 and logged[0].exc_info is not None and "r-1" in logged[0].getMessage()
    else:
        assert logged == []
    details = err.value.details()
    assert "Traceback" not in details and "/srv" not in details and "bad index" not in details


@pytest.mark.parametrize(
    ("finish", "expected"),
    [(Finish.STOP, common_pb2.FINISH_REASON_STOP), (Finish.ERROR, common_pb2.FINISH_REASON_ERROR), ("mystery", common_pb2.FINISH_REASON_ERROR)],
)
async def test_every_finish_reason_ends_the_stream_with_a_non_zero_last_message(scripted_tier, finish, expected):
    """Whatever reason the engine finishes with, the stream ends OK with a last message whose finish_reason is set."""
    engine, channel = scripted_tier
    engine.finish = finish
    msgs = await call_generate(channel, tpb.TierServiceGenerateRequest(prompt="hi"))
    assert msgs[0].text == "partial " and msgs[-1].finish_reason == expected
    assert msgs[-1].SerializeToString()[0] == 0x10  # what the router's relay looks for


async def test_random_bytes_are_invalid_argument_not_a_decode_error(scripted_tier):
    """Bytes that are no TierServiceGenerateRequest get INVALID_ARGUMENT with a plain message."""
    _, channel = scripted_tier
    call = channel.unary_stream(GENERATE)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call(b"\xff\xff\xff\xff\x0f"):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "request is not a valid qarr.v1.TierServiceGenerateRequest"
    assert reason_of(err.value.trailing_metadata()) == "INVALID_REQUEST"


async def test_the_tiers_template_and_stops_apply_to_prompts_and_to_chat_without_a_chat_template(scripted_tier):
    """A raw prompt is framed by prompt_template; the tier's stop strings are added to the caller's."""
    engine, channel = scripted_tier
    await call_generate(channel, tpb.TierServiceGenerateRequest(prompt="2+2?", sampling=common_pb2.SamplingParams(stop=["!"])))
    assert engine.tokenized[-1] == "Q: 2+2?\nA:"
    assert engine.last_sampling.stop == ("!", "\nQ:")


async def test_a_request_over_the_size_limit_is_refused_by_grpc_before_any_parsing():
    """A message larger than max_request_bytes gets RESOURCE_EXHAUSTED; the tier keeps serving."""
    engine = FakeEngine()
    server = TierServer(engine, "small", "bf16", limits=Limits(max_request_bytes=64 * 1024))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call_generate(ch, tpb.TierServiceGenerateRequest(prompt="x" * 100_000))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await call_generate(ch, tpb.TierServiceGenerateRequest(prompt="hi")))[-1].finish_reason
    finally:
        await server.stop(0)


# --- Fuzz: hostile requests and random bytes at a real in-process tier ----------------------------


@pytest.fixture
async def fuzz_tier():
    engine = FakeEngine(max_model_len=512)
    server = TierServer(engine, "fuzz", "bf16", prompt_format=PromptFormat("Question: {prompt}\nAnswer:", ("\nQuestion:",)))
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def check_answer(code, details, reason) -> None:
    assert code in ALLOWED, (code, details)
    if code is not grpc.StatusCode.OK:
        assert reason and len(details) <= 300 and "Traceback" not in details and ".py" not in details, details


async def test_hostile_requests_and_random_bytes_get_only_ok_invalid_argument_or_resource_exhausted(fuzz_tier):
    """300 hypothesis requests over every field and 300 random byte strings: each answered OK, INVALID_ARGUMENT
    or RESOURCE_EXHAUSTED with a bounded message; afterwards the tier is SERVING and answers a normal request."""
    seen: dict[str, int] = {}

    def run() -> None:
        with grpc.insecure_channel(fuzz_tier) as ch:

            @settings(max_examples=300, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(request=generate_requests(tpb.TierServiceGenerateRequest))
            def one(request):
                code, details, reason = outcome(ch, GENERATE, request.SerializeToString())
                seen[code.name] = seen.get(code.name, 0) + 1
                check_answer(code, details, reason)

            one()
            for body in random_bodies(300, seed=14):
                code, details, reason = outcome(ch, GENERATE, body)
                seen[code.name] = seen.get(code.name, 0) + 1
                check_answer(code, details, reason)

    await asyncio.to_thread(run)
    print(f"fuzz outcomes: {seen}")
    assert seen.get("OK") and seen.get("INVALID_ARGUMENT")
    async with grpc.aio.insecure_channel(fuzz_tier) as ch:
        assert await health_of(ch) == SERVING
        msgs = await call_generate(ch, tpb.TierServiceGenerateRequest(prompt="hello", sampling=common_pb2.SamplingParams(max_tokens=3)))
    assert msgs[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH and msgs[-1].usage.completion_tokens == 3
