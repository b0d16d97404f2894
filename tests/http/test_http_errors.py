"""Every refusal reaches an openai SDK caller as the right HTTP status, SDK exception, OpenAI error body and retry
advice, and is logged once by the core (one table: router/http/errors.py)."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import openai
import pytest

from router import errors
from router.http.errors import STATUS, http_error
from router.http.server import HttpServer
from mesh.config import HttpConfig
from tests.http.helpers import chat
from tests.router.routing_helpers import FakeTier, Router, request, tier_entry
from tests.router.test_router_errors import ScriptedTier, _drain, all_errors, request_log  # noqa: F401


class Attempts:
    """An httpx client for the SDK that counts the requests it sends (the SDK's own retries included)."""

    def __init__(self) -> None:
        self.sent = 0

        async def count(_request) -> None:
            self.sent += 1

        self.client = httpx.AsyncClient(event_hooks={"request": [count]}, timeout=30)


@pytest.fixture
async def mesh(tmp_path, started):  # noqa: F811
    """Tiers a, b (fake, 20 ms a token, at most 2 and 4 streams), scripted tier s; router: 6 streams, 5 messages,
    1,000 prompt bytes; HTTP door on."""
    a = await started(FakeTier("a", token_delay_s=0.02))
    b = await started(FakeTier("b", token_delay_s=0.02))
    s = await started(ScriptedTier("s"))
    tiers = [tier_entry(a, max_in_flight=2), tier_entry(b, max_in_flight=4),
             {"name": "s", "address": s.address, "max_model_len": 2048}]
    router = await started(Router(tmp_path, tiers, {}, max_in_flight=6, limits={"max_prompt_bytes": 1000, "max_messages": 5},
                                  http={"enabled": True, "listen": "127.0.0.1:0"}))
    await router.wait_serving("a", "b", "s")
    return router, a, b, s


async def test_every_domain_error_reaches_the_sdk_with_its_status_body_retry_advice_and_one_log_line(
        mesh, request_log, started, tmp_path):  # noqa: F811
    """Each RouteError, provoked for real over HTTP, raises the SDK exception of its status with the reason as `code`;
    admission refusals carry retry-after, what the router already retried says x-should-retry: false (the SDK then
    sends it once even with retries on), and the core logs one line per request."""
    router, a, b, s = mesh
    base_url = f"http://127.0.0.1:{router.server.http_port}/v1"
    seen: set[type] = set()

    async def expect(cls, status: int, exc: type, code: str, body: dict, *, retry: str, stream: bool = False,
                     via: str | None = None, api_key: str = "x"):
        attempts = Attempts()
        client = openai.AsyncOpenAI(base_url=via or base_url, api_key=api_key, http_client=attempts.client,
                                    max_retries=2 if retry == "never" else 0)
        before = len(request_log.lines)
        with pytest.raises(exc) as caught:
            if stream:
                async for _ in await client.chat.completions.create(**body, stream=True):
                    pass
            else:
                await client.chat.completions.create(**body)
        e = caught.value
        assert e.code == code, (cls, e)
        assert len(e.message) < 600 and "Traceback" not in e.message
        if isinstance(e, openai.APIStatusError):
            assert e.status_code == status, (cls, e.status_code, e.message)
            assert e.response.headers["content-type"] == "application/json"
            headers = e.response.headers
            if retry == "after":
                assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0, cls
                assert headers["x-should-retry"] == "true"
            elif retry == "never":
                assert headers["x-should-retry"] == "false" and "retry-after" not in headers, cls
                assert attempts.sent == 1, (cls, attempts.sent)  # the SDK did not add its retries
            else:
                assert "x-should-retry" not in headers and "retry-after" not in headers, cls
        lines = request_log.lines[before:]
        assert len(lines) == 1, (cls, lines)
        assert lines[0]["error"].lower() == code
        await attempts.client.aclose()
        seen.add(cls)
        return e

    # InvalidRequest: too many messages, a prompt over the byte limit, a tier that blames the request.
    await expect(errors.InvalidRequest, 400, openai.BadRequestError, "invalid_request",
                 {"model": "auto", "messages": [{"role": "user", "content": "x"}] * 6}, retry="none")
    await expect(errors.InvalidRequest, 400, openai.BadRequestError, "prompt_too_long", chat("z" * 2000), retry="none")
    s.code = grpc.StatusCode.INVALID_ARGUMENT
    await expect(errors.InvalidRequest, 400, openai.BadRequestError, "scripted_invalid_argument", chat(model="s"), retry="none")

    # A tier's own status before its first message: INTERNAL (after the router's retries), DEADLINE_EXCEEDED.
    s.code = grpc.StatusCode.INTERNAL
    await expect(errors.UpstreamFailed, 500, openai.InternalServerError, "scripted_internal", chat(model="s"), retry="never")
    s.code = grpc.StatusCode.DEADLINE_EXCEEDED
    await expect(errors.DeadlineExceeded, 504, openai.InternalServerError, "deadline_exceeded", chat(model="s"), retry="never")

    # StreamInterrupted: text, then the tier fails. Streaming: an error event the SDK raises on; not streaming: 500.
    a.engine.fail_after_tokens = 3
    e = await expect(errors.StreamInterrupted, 200, openai.APIError, "upstream_error", chat(model="a", max_tokens=10),
                     retry="none", stream=True)
    assert not isinstance(e, openai.APIStatusError) and "after 3 tokens" in e.message
    await expect(errors.StreamInterrupted, 500, openai.InternalServerError, "upstream_error", chat(model="a", max_tokens=10),
                 retry="never")
    a.engine.fail_after_tokens = None

    # Admission: a pinned tier full (TIER_FULL), a tier that says it is full with none other to take it (TIERS_FULL),
    # the router full (ROUTER_FULL; the streams holding it are gRPC calls: one core, one limit for both doors).
    slow = [asyncio.create_task(_drain(router, request(tier=t, max_tokens=400))) for t in "aabbb"]
    await router.wait_for(lambda: router.backends["a"].in_flight == 2 and router.backends["b"].in_flight == 3, what="a full")
    await expect(errors.Overloaded, 429, openai.RateLimitError, "tier_full", chat(model="a"), retry="after")
    s.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    await expect(errors.TiersBusy, 429, openai.RateLimitError, "tiers_full", chat(model="s"), retry="never")
    slow.append(asyncio.create_task(_drain(router, request(tier="b", max_tokens=400))))
    await router.wait_for(lambda: router.server.router.in_flight == 6, what="the router full")
    await expect(errors.Overloaded, 429, openai.RateLimitError, "router_full", chat(), retry="after")
    # CallerBusy: with tokens on, a caller at its own stream limit (1 here): the same token's next call.
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "tokens").write_text("alice:" + "A" * 20 + "\n")
    authed = await started(Router(tmp_path / "auth", [tier_entry(b, max_in_flight=4)], {}, max_in_flight_per_caller=1,
                                  auth={"tokens_file": str(tmp_path / "auth" / "tokens"), "allow_plaintext_tiers": True},
                                  http={"enabled": True, "listen": "127.0.0.1:0"}))
    await authed.wait_serving("b")
    alice = (("authorization", "Bearer " + "A" * 20),)
    slow.append(asyncio.create_task(_drain(authed, request(tier="b", max_tokens=400), metadata=alice)))
    await authed.wait_for(lambda: authed.server.router.in_flight == 1, what="alice's stream open")
    await expect(errors.CallerBusy, 429, openai.RateLimitError, "caller_full", chat(model="b"), retry="after",
                 via=f"http://127.0.0.1:{authed.server.http_port}/v1", api_key="A" * 20)
    for task in slow:
        task.cancel()
    await asyncio.gather(*slow, return_exceptions=True)

    # NoTierAvailable: the pinned tier is down, then every tier is.
    await b.stop()
    await router.wait_for(lambda: router.backends["b"].serving is False, what="b down")
    await expect(errors.NoTierAvailable, 503, openai.InternalServerError, "tier_unavailable", chat(model="b"), retry="never")
    await a.stop()
    await s.stop()
    await router.wait_for(lambda: not any(x.serving for x in router.backends.values()), what="all down")
    await expect(errors.NoTierAvailable, 503, openai.InternalServerError, "no_healthy_tier", chat(), retry="never")

    # UnknownTier cannot be provoked over HTTP: the door answers an unknown model itself (next test) before the core.
    assert seen | {errors.UnknownTier} == all_errors(), f"no scenario for {all_errors() - seen}"


def test_the_http_table_covers_every_domain_error():
    """Each RouteError maps to a 4xx/5xx status of its canonical code (an unknown tier: 404), OpenAI's error type for
    it, and its reason in lower case as the code."""
    for cls in all_errors():
        example = cls("x", "UNAVAILABLE", 0) if issubclass(cls, errors.StreamInterrupted) else (
            cls("x", "UNAVAILABLE") if issubclass(cls, errors.UpstreamFailed) else cls("x"))
        e = http_error(example)
        expected = 404 if cls is errors.UnknownTier else STATUS[example.code]
        assert e.status == expected and 400 <= e.status < 600, cls
        assert e.type == {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
            e.status, "server_error"), cls
        assert e.code == ("model_not_found" if cls is errors.UnknownTier else example.reason.lower())


async def test_door_refusals_are_openai_errors(mesh):
    """Unknown model (404, model_not_found), unknown path (404), wrong method (405), bad JSON and a bad header (400),
    an oversized body (413): each in OpenAI's error shape, none reaching the core."""
    router, *_ = mesh
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{router.server.http_port}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        await client.chat.completions.create(**chat(model="gpt-4o"))
    assert e.value.code == "model_not_found" and e.value.param == "model" and "auto, a, b, s" in e.value.message
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(**chat(), extra_headers={"x-qarr-min-accuracy": "lots"})
    assert e.value.param == "x-qarr-min-accuracy"
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(**chat(), extra_headers={"x-qarr-timeout-ms": "0"})
    assert e.value.param == "x-qarr-timeout-ms"
    with pytest.raises(openai.BadRequestError) as e:
        await client.chat.completions.create(**chat(), extra_headers={"x-request-id": "no spaces please"})
    assert e.value.param == "x-request-id"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.server.http_port}") as http:
        for method, path, content, status in [
            ("GET", "/v1/nothing", None, 404), ("GET", "/v1/chat/completions", None, 405),
            ("POST", "/v1/chat/completions", b"{not json", 400),
            ("POST", "/v1/completions", b'{"model": "auto", "prompt": "' + b"x" * (5 << 20) + b'"}', 413),
        ]:
            r = await http.request(method, path, content=content)
            assert r.status_code == status, (path, r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]


async def test_bearer_token_is_required_when_auth_is_on(mesh):
    """With a token check, a missing or wrong bearer token is 401 (AuthenticationError) on every endpoint but
    health; the right one passes."""
    router, *_ = mesh
    door = HttpServer(router.server.router, HttpConfig(enabled=True, listen="127.0.0.1:0"), serving=lambda: True,
                      caller_of=lambda authorization: "alice" if authorization == "Bearer s3cret" else None)
    port = await door.start()
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        wrong = openai.AsyncOpenAI(base_url=base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            await wrong.chat.completions.create(**chat(max_tokens=2))
        assert e.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        async with httpx.AsyncClient(base_url=base_url) as http:
            r = await http.post("/chat/completions", json=chat(max_tokens=2))
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        good = openai.AsyncOpenAI(base_url=base_url, api_key="s3cret", max_retries=0)
        done = await good.chat.completions.create(**chat(max_tokens=2))
        assert done.usage.completion_tokens == 2
        assert [m.id for m in (await good.models.list()).data][:1] == ["auto"]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    finally:
        await door.stop(0)
