"""Client and AsyncClient against a real router (in-process, fake-engine tiers)."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest

import clients
from clients import (
    AsyncClient,
    Cancelled,
    Chunk,
    Client,
    Completion,
    DeadlineExceeded,
    InvalidRequest,
    QarrError,
    ResourceExhausted,
    ServerError,
    Tier,
    TierList,
    Unauthenticated,
    Unavailable,
    Usage,
)
from tests.clients.conftest import running_mesh

FAKE_WORDS = ["alpha ", "bravo ", "charlie ", "delta ", "echo "]

ERROR_CLASSES = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.UNIMPLEMENTED: ServerError,
    grpc.StatusCode.DATA_LOSS: ServerError,
}


def unused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_public_names_are_exported():
    """Every public name of the package is in __all__ (sorted), and every name in __all__ exists."""
    public = {n for n, v in vars(clients).items() if not n.startswith("_") and not isinstance(v, type(clients))}
    assert clients.__all__ == sorted(public)
    assert all(hasattr(clients, n) for n in clients.__all__)


def test_every_error_class_is_a_qarr_error():
    """All SDK errors share one base, so `except QarrError` catches everything the SDK raises."""
    for cls in set(ERROR_CLASSES.values()):
        assert issubclass(cls, QarrError)


async def test_sync_generate_streams_typed_chunks(router):
    """Client.generate yields text chunks, then one closing chunk with finish reason, usage and tier."""

    def run():
        with Client(router) as client:
            return list(client.generate("hello world", max_tokens=5))

    chunks = await asyncio.to_thread(run)
    assert all(type(c) is Chunk for c in chunks)
    assert [c.text for c in chunks[:-1]] == FAKE_WORDS
    assert [c.finish_reason for c in chunks[:-1]] == [None] * 5
    last = chunks[-1]
    assert (last.text, last.finish_reason, last.usage, last.tier, last.quantization) == ("", "length", Usage(2, 5), "a", "q-a")


async def test_async_generate_streams_typed_chunks(router):
    """AsyncClient.generate is an async iterator of the same typed chunks, for chat messages too."""
    async with AsyncClient(router) as client:
        chunks = [c async for c in client.generate(messages=[{"role": "user", "content": "hi"}], max_tokens=3)]
    assert [c.text for c in chunks] == [*FAKE_WORDS[:3], ""]
    assert chunks[-1].finish_reason == "length" and chunks[-1].tier == "a" and chunks[-1].model == "fake-a"


async def test_complete_returns_text_usage_tier_and_finish_reason(router):
    """complete() (sync and async) joins the stream into one Completion."""
    async with AsyncClient(router) as client:
        got = await client.complete("one two three", max_tokens=2)

    def run():
        with Client(router) as client:
            return client.complete("one two three", max_tokens=2)

    assert got.replica.startswith("127.0.0.1:")  # the tier's one replica
    expected = Completion(text="alpha bravo ", finish_reason="length", usage=Usage(3, 2), tier="a", model="fake-a",
                          quantization="q-a", routing_reason="fallback_most_accurate", attempts=1, replica=got.replica)
    assert got == expected
    assert await asyncio.to_thread(run) == expected


async def test_tiers_are_typed(router):
    """tiers() returns Tier dataclasses with health and load, not protobuf."""
    async with AsyncClient(router) as client:
        tiers = await client.tiers()
    assert [type(t) for t in tiers] == [Tier]
    assert (tiers[0].name, tiers[0].health, tiers[0].quantization) == ("a", "SERVING", "q-a")


async def test_tiers_name_the_predictor_in_force_and_stay_a_list(router, predicted_router):
    """tiers() (sync and async) is still a list of Tier, and its .predictor is ListTiers' predictor: a trained
    predictor's id when the profiles name one, "" when none is in force."""
    address, predictor_id = predicted_router
    async with AsyncClient(address) as client:
        tiers = await client.tiers()

    def run(target):
        with Client(target) as client:
            return client.tiers()

    synced = await asyncio.to_thread(run, address)
    for got in (tiers, synced):
        assert isinstance(got, list) and isinstance(got, TierList)
        assert sorted(t.name for t in got) == ["a", "b"] and all(type(t) is Tier for t in got)
        assert got.predictor == predictor_id and predictor_id
        assert got == list(got) and "predictor=" in repr(got)
    async with AsyncClient(router) as client:
        assert (await client.tiers()).predictor == ""
    assert (await asyncio.to_thread(run, router)).predictor == ""


async def test_passing_both_prompt_and_messages_is_refused_before_any_call(router):
    """A request the SDK can tell is malformed raises ValueError at once."""
    async with AsyncClient(router) as client:
        with pytest.raises(ValueError):
            client.generate("x", messages=[{"role": "user", "content": "y"}])


@pytest.mark.parametrize("code", list(ERROR_CLASSES), ids=lambda c: c.name)
async def test_each_status_raises_its_error_class(scripted, code):
    """Each gRPC status maps to its QarrError subclass carrying the server's message, reason and code (sync and async)."""
    address, _ = scripted
    cls = ERROR_CLASSES[code]
    async with AsyncClient(address, max_retries=0) as client:
        with pytest.raises(cls) as caught:
            await client.complete(code.name)
    assert type(caught.value) is cls
    assert (caught.value.message, caught.value.reason, caught.value.code) == (f"scripted {code.name}", f"SCRIPTED_{code.name}", code)

    def run():
        with Client(address, max_retries=0) as client:
            client.complete(code.name)

    with pytest.raises(cls):
        await asyncio.to_thread(run)


async def test_unknown_tier_is_invalid_request(router):
    """Pinning a tier the router does not know raises InvalidRequest with the router's reason."""
    async with AsyncClient(router) as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.complete("hi", tier="nope")
    assert caught.value.reason == "UNKNOWN_TIER" and "nope" in caught.value.message


async def test_bad_sampling_is_invalid_request_from_the_tier(router, engine):
    """A value the tier rejects comes back as InvalidRequest naming the field, and is not retried."""
    async with AsyncClient(router) as client:
        with pytest.raises(InvalidRequest) as caught:
            await client.complete("hi", temperature=5.0)
    assert "temperature" in caught.value.message
    assert engine.requests == []  # rejected during validation, before the engine


async def test_no_serving_tier_is_unavailable():
    """A router whose only tier is down raises Unavailable after the bounded retries."""
    async with running_mesh({}, extra_tiers={"down": unused_address()}) as address:
        async with AsyncClient(address, max_retries=1) as client:
            with pytest.raises(Unavailable) as caught:
                await client.complete("hi")
    assert caught.value.reason == "NO_HEALTHY_TIER"


async def test_slow_tier_past_the_deadline_is_deadline_exceeded(router, engine):
    """A call that outlives its deadline raises DeadlineExceeded."""
    engine.token_delay_s = 0.2
    async with AsyncClient(router, timeout=0.3) as client:
        with pytest.raises(DeadlineExceeded):
            await client.complete("hi", max_tokens=50)


async def test_engine_failure_is_server_error(router, engine):
    """An engine error at the tier (INTERNAL) raises ServerError."""
    engine.fail_after_tokens = 0
    async with AsyncClient(router) as client:
        with pytest.raises(ServerError) as caught:
            await client.complete("hi")
    assert caught.value.reason == "ENGINE_ERROR"


async def test_a_failure_the_router_already_retried_is_not_retried_again(router, engine):
    """Against a mesh whose only tier fails every call, the tier sees exactly the router's attempts:
    the router marks its UNAVAILABLE as already retried and the SDK does not multiply it (sync and async)."""
    engine.unavailable_next = 10
    async with AsyncClient(router, max_retries=2) as client:
        with pytest.raises(Unavailable) as e:
            await client.complete("hi", max_tokens=2)
    assert not e.value.retryable and len(engine.requests) == 1

    def run():
        with Client(router, max_retries=2) as client:
            return client.complete("hi", max_tokens=2)

    with pytest.raises(Unavailable):
        await asyncio.to_thread(run)
    assert len(engine.requests) == 2


async def test_connection_refused_is_retried_until_the_router_listens(engine):
    """A call made while nothing listens yet is retried, and succeeds once the router comes up."""
    address = unused_address()
    async with AsyncClient(address, max_retries=8, timeout=20) as client:
        call = asyncio.ensure_future(client.complete("hi", max_tokens=2))
        # Start the router only once the first try has been refused.
        while client._channel.get_state() != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            assert not call.done(), call
            await asyncio.sleep(0.01)
        async with running_mesh({"a": engine}, listen=address):
            got = await call
    assert got.text == "alpha bravo " and len(engine.requests) == 1


async def test_retries_are_bounded(scripted):
    """A router that keeps answering UNAVAILABLE (no pushback) is tried max_retries + 1 times, then Unavailable is raised."""
    address, fake = scripted
    async with AsyncClient(address, max_retries=2) as client:
        with pytest.raises(Unavailable) as e:
            await client.complete("UNAVAILABLE")
    assert fake.calls["UNAVAILABLE"] == 3 and e.value.retryable


@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
async def test_a_negative_retry_pushback_stops_sdk_retries(scripted, code):
    """An error the router marks as already retried (grpc-retry-pushback-ms < 0) is raised at once (sync and async)."""
    address, fake = scripted
    async with AsyncClient(address, max_retries=3) as client:
        with pytest.raises(QarrError) as e:
            await client.complete(f"{code} retried")
    assert fake.calls[f"{code} retried"] == 1 and not e.value.retryable

    def run():
        with Client(address, max_retries=3) as client:
            client.complete(f"{code} retried")

    with pytest.raises(QarrError):
        await asyncio.to_thread(run)
    assert fake.calls[f"{code} retried"] == 2


async def test_retry_info_sets_the_least_wait_before_the_next_attempt(scripted):
    """RESOURCE_EXHAUSTED with a 0.3 s RetryInfo is retried no sooner than 0.3 s later."""
    address, fake = scripted
    started = time.monotonic()
    async with AsyncClient(address, max_retries=1) as client:
        with pytest.raises(ResourceExhausted) as e:
            await client.complete("RESOURCE_EXHAUSTED after=0.3")
    assert fake.calls["RESOURCE_EXHAUSTED after=0.3"] == 2 and e.value.retry_after_s == 0.3
    assert time.monotonic() - started >= 0.3


async def test_retries_stop_at_the_deadline(scripted):
    """However many retries are allowed, none starts after the call's deadline."""
    address, fake = scripted
    started = time.monotonic()
    async with AsyncClient(address, max_retries=1000, timeout=0.5) as client:
        with pytest.raises((Unavailable, DeadlineExceeded)):
            await client.complete("UNAVAILABLE")
    assert time.monotonic() - started < 2.5
    assert 1 < fake.calls["UNAVAILABLE"] < 20


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "INTERNAL"])
async def test_only_unavailable_and_resource_exhausted_are_retried(scripted, code):
    """RESOURCE_EXHAUSTED is retried like UNAVAILABLE; INVALID_ARGUMENT, DEADLINE_EXCEEDED and INTERNAL never."""
    address, fake = scripted
    async with AsyncClient(address, max_retries=2) as client:
        with pytest.raises(QarrError):
            await client.complete(code)
    assert fake.calls[code] == (3 if code == "RESOURCE_EXHAUSTED" else 1)


async def test_a_stream_that_delivered_text_is_never_retried(router, engine):
    """When a stream breaks after text, the caller gets the text, then the error; the tier saw one request."""
    engine.unavailable_after_tokens = 2
    got: list[Chunk] = []
    async with AsyncClient(router, max_retries=3) as client:
        with pytest.raises(Unavailable):
            async for chunk in client.generate("hi", max_tokens=10):
                got.append(chunk)
    assert [c.text for c in got] == ["alpha ", "bravo ", ""]
    assert got[-1].finish_reason == "error" and got[-1].usage.completion_tokens == 2
    assert len(engine.requests) == 1

    def run():
        with Client(router, max_retries=3) as client:
            return list(client.generate("hi", max_tokens=10))

    with pytest.raises(Unavailable):
        await asyncio.to_thread(run)
    assert len(engine.requests) == 2


async def test_closing_a_stream_early_cancels_the_request(router, engine):
    """Leaving a stream after the first chunk cancels the call; the engine aborts the request."""
    engine.token_delay_s = 0.01

    def run():
        with Client(router) as client:
            stream = client.generate("hi", max_tokens=1000)
            first = next(stream)
            stream.close()
            return first

    assert (await asyncio.to_thread(run)).text == "alpha "
    deadline = time.monotonic() + 5
    while len(engine.aborted) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(engine.aborted) == 1 and engine.aborted[0] == engine.requests[0]


async def test_cancelling_a_caller_waiting_for_its_first_chunk_cancels_the_call_at_once(router, engine):
    """A task cancelled before the first chunk (Ctrl-C in `qarr batch`, a caller's own timeout) ends its call
    right away, with the client still open: the tier sees the cancel, not the channel's close much later."""
    engine.hold_after = 0  # the tier holds the call: no first chunk ever comes
    async with AsyncClient(router) as client:
        async def first_chunk():
            async for chunk in client.generate("hi", max_tokens=4):
                return chunk

        task = asyncio.create_task(first_chunk())
        deadline = time.monotonic() + 10
        while not engine.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.requests, "the call never reached the tier"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while engine.held_cancelled < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert engine.held_cancelled == 1
