"""With the router locked (tls, auth, per-caller limit), the HTTP door is locked the same way: https with the
router's certificate (mutual TLS when it asks for client certificates), the same bearer tokens, the same
per-caller stream limit, and the caller named in the request's log line."""

from __future__ import annotations

import ssl

import httpx
import openai
import pytest

from tests.http.helpers import chat
from tests.router.routing_helpers import FakeTier, Router, tier_entry
from tests.router.test_router_errors import request_log  # noqa: F401
from tests.security.conftest import pki  # noqa: F401  (the throwaway CA, certificates and tokens)


def client(port: int, pki, token: str, cert: str | None = None) -> openai.AsyncOpenAI:  # noqa: F811
    """The SDK over https, trusting the mesh CA (and presenting `cert`.pem when given)."""
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if cert:
        context.load_cert_chain(pki.path(f"{cert}.pem"), pki.path(f"{cert}.key"))
    return openai.AsyncOpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key=token, max_retries=0,
                              http_client=httpx.AsyncClient(verify=context, timeout=30))


@pytest.fixture
async def locked(tmp_path, started, pki):  # noqa: F811
    """A fake tier (10 ms a token) and a router with tls, plaintext tiers allowed, tokens, one stream per caller."""
    a = await started(FakeTier("a", token_delay_s=0.01))
    router = await started(Router(
        tmp_path, [tier_entry(a)], {}, tls=pki.server("router"), max_in_flight_per_caller=1,
        auth={"tokens_file": pki.path("tokens"), "allow_plaintext_tiers": True},
        http={"enabled": True, "listen": "127.0.0.1:0"},
    ))
    await router.wait_serving("a")
    return router


async def test_https_with_the_same_tokens_and_caller_limit(locked, pki, request_log):  # noqa: F811
    """alice's token streams over https and her log line names her; a wrong token is 401; plain http to the port
    fails; alice's second stream while one is open is 429 caller_full, while bob's goes through."""
    port = locked.server.http_port
    alice = client(port, pki, pki.tokens["alice"])
    stream = await alice.chat.completions.create(**chat(model="a", max_tokens=3), stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "alpha bravo charlie "
    assert request_log.lines[-1]["caller"] == "alice" and request_log.lines[-1]["status"] == "OK"
    assert [m.id for m in (await alice.models.list()).data] == ["auto", "a"]

    with pytest.raises(openai.AuthenticationError):
        await client(port, pki, pki.stranger_tokens["alice"]).chat.completions.create(**chat(max_tokens=1))
    with pytest.raises(openai.APIConnectionError):
        plain = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=pki.tokens["alice"], max_retries=0)
        await plain.chat.completions.create(**chat(max_tokens=1))

    held = await alice.chat.completions.create(**chat(model="a", max_tokens=500), stream=True)
    await anext(aiter(held))
    with pytest.raises(openai.RateLimitError) as e:
        await alice.chat.completions.create(**chat(max_tokens=1))
    assert e.value.code == "caller_full" and e.value.response.headers["retry-after"] == "1"
    done = await client(port, pki, pki.tokens["bob"]).chat.completions.create(**chat(max_tokens=2))
    assert done.usage.completion_tokens == 2
    await held.close()


async def test_mutual_tls_door_needs_a_client_certificate(tmp_path, started, pki):  # noqa: F811
    """With client_ca on the router's tls, the door refuses a TLS client without a certificate at the handshake and
    serves one presenting client.pem."""
    a = await started(FakeTier("a"))
    router = await started(Router(tmp_path, [tier_entry(a)], {}, tls=pki.server("router", client_ca="client-ca.pem"),
                                  http={"enabled": True, "listen": "127.0.0.1:0"}))
    await router.wait_serving("a")
    port = router.server.http_port
    with pytest.raises(openai.APIConnectionError):
        await client(port, pki, "unused").chat.completions.create(**chat(max_tokens=1))
    done = await client(port, pki, "unused", cert="client").chat.completions.create(**chat(max_tokens=2))
    assert done.choices[0].message.content == "alpha bravo "
