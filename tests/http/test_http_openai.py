"""The official openai SDK (async and sync) against the router's HTTP door over fake tiers: streaming, answers,
models, hints, headers, deadlines, disconnects and health, all through the same core as gRPC."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from qarr.v1 import router_service_pb2 as pb
from tests.http.helpers import HttpMesh, aborted_within, chat

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel".split()


def fake_text(n: int) -> str:
    return "".join(WORDS[i % len(WORDS)] + " " for i in range(n))


async def test_async_sdk_streams_chat_with_usage_and_qarr_fields(mesh):
    """A pinned stream yields the tier's text chunk by chunk, a finish chunk with `qarr`, then usage equal to the
    tier's own counts (stream_options.include_usage)."""
    client = mesh.client()
    stream = await client.chat.completions.create(**chat(model="a", max_tokens=5), stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == [w + " " for w in WORDS[:5]]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model == "a"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "length"
    assert finish[0].qarr == {"tier": "a", "model": "fake-a", "quantization": "a", "routing_reason": "pinned", "attempts": 1}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.total_tokens == 8  # fake: "<user> hello there"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


async def test_raw_stream_is_sse_ending_with_done_and_headers_name_the_tier(mesh):
    """On the wire: text/event-stream, `data: {json}` events, the last `data: [DONE]`; the headers (sent with the first
    chunk) already name the tier, its model and quantization, the routing reason and the request id."""
    async with mesh.http() as http:
        async with http.stream("POST", "/v1/completions", json={"model": "auto", "prompt": "Once", "max_tokens": 3,
                                                                  "stream": True}, headers={"x-request-id": "wire-1"}) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
            assert r.headers["x-request-id"] == "wire-1" and r.headers["x-qarr-tier"] in ("a", "b")
            tier = r.headers["x-qarr-tier"]
            assert r.headers["x-qarr-model"] == "" and r.headers["x-qarr-quantization"] == tier
            assert r.headers["x-qarr-routing-reason"] and r.headers["x-qarr-attempts"] == "1"
            assert r.headers["x-qarr-replica"].startswith("127.0.0.1:")
            body = (await r.aread()).decode()
    events = body.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    parsed = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert "".join(e["choices"][0]["text"] for e in parsed) == fake_text(3)
    assert {e["id"] for e in parsed} == {"cmpl-wire-1"} and {e["object"] for e in parsed} == {"text_completion"}
    assert parsed[-1]["qarr"]["tier"] == tier and parsed[-1]["choices"][0]["finish_reason"] == "length"


async def test_sync_sdk_answers_chat_and_completions(mesh):
    """The sync client (run off the loop that serves the router): a chat answer, a completion, a stream."""
    client = mesh.sync_client()

    def calls():
        answer = client.chat.completions.create(**chat(model="b", max_completion_tokens=4))
        completion = client.completions.create(model="b", prompt="Once upon a time", max_tokens=2)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            **chat(model="b", max_tokens=3), stream=True) if c.choices)
        raw = client.chat.completions.with_raw_response.create(**chat(model="b", max_tokens=1))
        return answer, completion, streamed, raw

    answer, completion, streamed, raw = await asyncio.to_thread(calls)
    assert answer.choices[0].message.content == fake_text(4) and answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "length" and answer.model == "b" and answer.object == "chat.completion"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 4)
    assert answer.qarr["tier"] == "b" and answer.qarr["routing_reason"] == "pinned"
    assert completion.choices[0].text == fake_text(2) and completion.usage.prompt_tokens == 4
    assert streamed == fake_text(3)
    assert raw.headers["x-qarr-tier"] == "b" and raw.headers["x-qarr-quantization"] == "b"
    assert raw.headers["x-qarr-model"] == "fake-b" and raw.headers["x-qarr-routing-reason"] == "pinned"


async def test_models_list_tiers_and_auto_and_the_default_name_routes(tmp_path, started):
    """/v1/models lists auto, the configured default name, then every tier with its live state; the default name
    routes like auto; retrieve finds one."""
    mesh = await started(HttpMesh(tmp_path, {"a": 0.0, "b": 0.0}, http={"default_model": "gpt-4o-mini"}))
    client = mesh.client()
    models = (await client.models.list()).data
    assert [m.id for m in models] == ["auto", "gpt-4o-mini", "a", "b"]
    assert models[2].qarr["quantization"] == "a" and models[2].qarr["serving"] is True
    assert models[2].qarr["breaker"] == "closed" and models[2].owned_by == "qarr"
    assert (await client.models.retrieve("b")).qarr["max_model_len"] == 2048
    routed = await client.chat.completions.with_raw_response.create(**chat(model="gpt-4o-mini", max_tokens=1))
    assert routed.headers["x-qarr-routing-reason"] != "pinned"


@pytest.mark.parametrize("how", ["extra_body", "headers"])
async def test_routing_hints_arrive_as_extra_body_or_headers(mesh, how):
    """min_accuracy / latency_budget_ms steer the choice the same way from extra_body and from x-qarr-* headers: an
    accuracy no tier has falls back to the most accurate tier (a)."""
    client = mesh.client()
    hints = {"min_accuracy": 0.99, "latency_budget_ms": 60_000}
    kw = {"extra_body": hints} if how == "extra_body" else {"extra_headers": {
        "x-qarr-min-accuracy": "0.99", "x-qarr-latency-budget-ms": "60000"}}
    raw = await client.chat.completions.with_raw_response.create(**chat(max_tokens=1), **kw)
    assert (raw.headers["x-qarr-tier"], raw.headers["x-qarr-routing-reason"]) == ("a", "fallback_most_accurate")
    plain = await client.chat.completions.create(**chat(max_tokens=1), extra_body={"min_accuracy": 0.0})
    assert plain.qarr["routing_reason"] != "fallback_most_accurate"


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_aborts_the_engine_request(mesh, stream):
    """Closing the connection mid-generation (streaming, or waiting for a whole answer) cancels the core's stream and
    the tier call: the engine aborts the request within 1 s and the router holds no stream."""
    async with mesh.http() as http:
        body = chat(model="a", max_tokens=2000, stream=stream)
        if stream:
            async with http.stream("POST", "/v1/chat/completions", json=body, headers={"x-request-id": "bye-s"}) as r:
                lines = r.aiter_lines()
                while not (await anext(lines)).startswith("data: {"):
                    pass  # one chunk arrived: the engine is generating
        else:
            task = asyncio.create_task(http.post("/v1/chat/completions", json=body, headers={"x-request-id": "bye-a"}))
            await mesh.wait_for(lambda: mesh.engine("a").running == 1, what="generation started")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    took = await aborted_within(mesh.engine("a"), "bye-s" if stream else "bye-a", timeout=1.0)
    await mesh.wait_for(lambda: mesh.server.router.in_flight == 0 and mesh.engine("a").running == 0, timeout=1.0,
                        what="no stream left")
    print(f"\ndisconnect -> engine abort ({'stream' if stream else 'answer'}): {took * 1000:.1f} ms")


async def test_deadline_header_ends_the_call_with_504_and_aborts_the_engine(mesh):
    """x-qarr-timeout-ms becomes the core's deadline: a whole answer that cannot finish in time is 504, a stream ends
    with a deadline error event; the engine aborts both."""
    client = mesh.client()
    with pytest.raises(openai.InternalServerError) as e:
        await client.chat.completions.create(**chat(model="a", max_tokens=2000),
                                             extra_headers={"x-qarr-timeout-ms": "300", "x-request-id": "late-1"})
    assert e.value.status_code == 504 and e.value.code == "deadline_exceeded"
    await aborted_within(mesh.engine("a"), "late-1")
    got = []
    with pytest.raises(openai.APIError) as e:
        async for chunk in await client.chat.completions.create(
                **chat(model="a", max_tokens=2000), stream=True,
                extra_headers={"x-qarr-timeout-ms": "300", "x-request-id": "late-2"}):
            got.append(chunk)
    assert got and e.value.code == "deadline_exceeded"
    await aborted_within(mesh.engine("a"), "late-2")


async def test_default_request_timeout_applies_without_a_header(tmp_path, started):
    """http.request_timeout_s is the deadline of a request that sends none."""
    mesh = await started(HttpMesh(tmp_path, {"a": 0.01}, http={"request_timeout_s": 0.3}))
    with pytest.raises(openai.InternalServerError) as e:
        await mesh.client().chat.completions.create(**chat(max_tokens=2000))
    assert e.value.status_code == 504


async def test_http_and_grpc_share_one_core(mesh):
    """Both doors count against the same admission limit and metrics: with the router full of gRPC streams an HTTP
    call is refused (429), and HTTP calls land in the same qarr_router_requests counter."""
    registry = mesh.server.telemetry.registry
    before = registry.get_sample_value("qarr_router_requests_total", {"tier": "b", "code": "OK", "finish_reason": "length"}) or 0
    await mesh.client().chat.completions.create(**chat(model="b", max_tokens=2))
    after = registry.get_sample_value("qarr_router_requests_total", {"tier": "b", "code": "OK", "finish_reason": "length"})
    assert after == before + 1
    mesh.router.config_data["max_in_flight"] = 1
    mesh.router.write_config()
    await mesh.wait_for(lambda: mesh.server.router.config.max_in_flight == 1, what="reload")
    req = pb.GenerateRequest(prompt="x", sampling={"max_tokens": 500}, routing={"tier": "a"})
    held = mesh.router.stub.Generate(req, timeout=30)
    await held.read()
    with pytest.raises(openai.RateLimitError) as e:
        await mesh.client().chat.completions.create(**chat(max_tokens=1))
    assert e.value.code == "router_full" and e.value.response.headers["retry-after"] == "1"
    held.cancel()


async def test_health_and_ready_mirror_the_router(tmp_path, started):
    """/ready is 503 while no tier can serve and 200 again when one returns; /health follows gRPC health, and both
    say 503 while the router drains."""
    mesh = await started(HttpMesh(tmp_path, {"a": 0.0}, health_interval_s=0.1))
    async with mesh.http() as http:
        assert (await http.get("/ready")).json() == {"ready": True}
        assert (await http.get("/health")).json() == {"status": "SERVING"}
        await mesh.tiers["a"].stop()
        await mesh.wait_for(lambda: mesh.server.router.ready() is False, what="a down")
        await mesh.wait_for(lambda: mesh.server.serving is False, what="health NOT_SERVING")
        assert (await http.get("/ready")).status_code == 503
        assert (await http.get("/health")).status_code == 503
        await mesh.tiers["a"].start()
        await mesh.wait_for(lambda: mesh.server.serving, timeout=10, what="back")
        assert (await http.get("/ready")).status_code == 200
        stopping = asyncio.create_task(mesh.server.stop(grace=0.5, notice=1.0))
        await mesh.wait_for(lambda: not mesh.server.serving, what="draining")
        r = await http.get("/health")  # still answered during the drain notice
        assert r.status_code == 503 and r.json() == {"status": "NOT_SERVING"}
        await stopping
    await mesh.router.channel.close()
    mesh.router = None  # its server is stopped already
