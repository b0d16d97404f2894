"""Bearer tokens on every router method (health excepted), mutual TLS between router and tiers, and
tokens that never show: issue 14, item 3.10."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc, tier_service_pb2, tier_service_pb2_grpc
from router.auth import REFUSAL
from tests.router.routing_helpers import Router, request, tier_entry
from tests.security.conftest import PROFILES

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
SERVING = health_pb2.HealthCheckResponse.SERVING


async def generate(channel: grpc.aio.Channel, metadata=None, **kwargs) -> list[pb.GenerateResponse]:
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    return [m async for m in stub.Generate(request(max_tokens=4, min_accuracy=0.0, latency_budget_ms=60_000, **kwargs),
                                            timeout=10, metadata=metadata)]


async def reflect(channel: grpc.aio.Channel, metadata=None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10, metadata=metadata)
    return [s.name async for resp in call for s in resp.list_services_response.service]


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


def every_router_method(channel: grpc.aio.Channel, metadata):
    """One call of each method the router serves (and one it does not), as awaitables."""
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    return {
        "Generate": generate(channel, metadata),
        "ListTiers": stub.ListTiers(pb.ListTiersRequest(), timeout=10, metadata=metadata),
        "reflection": reflect(channel, metadata),
        "unknown method": channel.unary_unary("/qarr.v1.RouterService/Nope")(b"", timeout=10, metadata=metadata),
    }


async def test_every_router_method_without_a_token_is_unauthenticated(locked_mesh):
    """Generate (streaming), ListTiers, reflection and an unknown method all end UNAUTHENTICATED without a token,
    with one fixed message that names no caller and no token."""
    async with locked_mesh.channel() as channel:
        for method, call in every_router_method(channel, None).items():
            e = await refused(call)
            assert e.code() == UNAUTHENTICATED, (method, e.code(), e.details())
            assert e.details() == REFUSAL, method
            trailers = repr(e.trailing_metadata())
            assert not any(name in trailers for name in locked_mesh.pki.tokens), method
    print(f"\nno token: Generate, ListTiers, reflection, unknown method -> UNAUTHENTICATED {REFUSAL!r}")


async def test_a_wrong_or_malformed_token_is_refused_exactly_like_none(locked_mesh):
    """A wrong token, a near miss, another deployment's token, a token in the wrong scheme or an empty bearer all
    get the same UNAUTHENTICATED and the same message as no token: nothing tells a guess apart."""
    alice = locked_mesh.pki.tokens["alice"]
    near_miss = alice[:-1] + ("A" if alice[-1] != "A" else "B")
    values = [f"Bearer {near_miss}", f"Bearer {locked_mesh.pki.stranger_tokens['alice']}", f"Basic {alice}",
              "Bearer ", "Bearer", alice, f"Bearer {alice} extra", "bearer " + "x" * 4096]
    async with locked_mesh.channel() as channel:
        for value in values:
            for method, call in every_router_method(channel, (("authorization", value),)).items():
                e = await refused(call)
                assert (e.code(), e.details()) == (UNAUTHENTICATED, REFUSAL), (value[:20], method, e.details())
    print(f"\n{len(values)} wrong or malformed authorization values x 4 methods -> UNAUTHENTICATED, same message")


async def test_health_answers_probes_without_a_token(locked_mesh):
    """grpc.health.v1 Check and Watch answer SERVING with no token (orchestrators probe without credentials)."""
    async with locked_mesh.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
        assert (await watch.read()).status == SERVING
        watch.cancel()


async def test_a_known_token_is_served_end_to_end_over_tls_and_mutual_tls_to_the_tiers(locked_mesh):
    """With alice's token, Generate streams a whole answer through the TLS router and a mutual-TLS tier, ListTiers and
    reflection answer, and the request's log line names the caller alice (never her token)."""
    alice = locked_mesh.pki.bearer("alice")
    async with locked_mesh.channel() as channel:
        messages = await generate(channel, alice)
        assert messages[-1].finish_reason and messages[-1].tier in ("a", "b")
        assert "".join(m.text for m in messages) == "alpha bravo charlie delta "
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        tiers = await stub.ListTiers(pb.ListTiersRequest(), timeout=10, metadata=alice)
        assert {t.name for t in tiers.tiers} == {"a", "b"}
        assert "qarr.v1.RouterService" in await reflect(channel, alice)
    lines = [t for t in locked_mesh.logs.texts if "request finished" in t and "'caller': 'alice'" in t]
    assert lines, "no request log line names the caller"


@pytest.mark.parametrize("stranger", [False, True], ids=["router-ca", "stranger"])
async def test_a_tier_refuses_a_direct_call_without_the_routers_certificate(locked_mesh, stranger):
    """A tier with mutual TLS refuses plaintext, TLS without a client certificate, a caller's own certificate (another
    CA) and a certificate of another PKI; it serves a call presenting the router's certificate."""
    pki = locked_mesh.pki
    address = locked_mesh.tiers[0].address
    tier_request = tier_service_pb2.TierServiceGenerateRequest(prompt="hello", request_id="direct")

    async def call(credentials: grpc.ChannelCredentials | None):
        channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
        async with channel:
            stub = tier_service_pb2_grpc.TierServiceStub(channel)
            return [m async for m in stub.Generate(tier_request, timeout=5)]

    attempts = {
        "plaintext": None,
        "TLS, no client certificate": pki.credentials(),
        "a caller's certificate (client-ca)": pki.credentials(client="client"),
        "another PKI's router certificate": pki.credentials(client="router-client", stranger_client=True),
    }
    if stranger:
        attempts = {"another PKI's CA and router certificate": pki.credentials(stranger_ca=True, client="router-client", stranger_client=True)}
    for what, credentials in attempts.items():
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(credentials)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (what, e.value.code(), e.value.details())
    served = await call(pki.credentials(client="router-client"))
    assert served[-1].finish_reason and served[-1].tier == "a"


async def test_reflection_can_be_turned_off(pki, started, tmp_path):
    """reflection: false removes the reflection service (UNIMPLEMENTED even with a good token); Generate still serves."""
    from tests.router.routing_helpers import FakeTier

    a = await started(FakeTier("a"))
    router = await started(Router(tmp_path, [tier_entry(a)], PROFILES, reflection=False,
                                  auth={"tokens_file": pki.path("tokens"), "allow_plaintext_tiers": True}))
    await router.wait_serving("a")
    alice = pki.bearer("alice")
    e = await refused(reflect(router.channel, alice))
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (await generate(router.channel, alice))[-1].tier == "a"
    e = await refused(reflect(router.channel, None))
    assert e.code() == UNAUTHENTICATED  # without a token nothing tells what exists


async def test_tokens_never_appear_in_logs(locked_mesh):
    """After good and bad calls with every token (and near misses), no log record of this process, its
    message, arguments or extra fields, contains any token or the tokens file's text."""
    pki = locked_mesh.pki
    async with locked_mesh.channel() as channel:
        for caller in pki.tokens:
            await generate(channel, pki.bearer(caller))
            await refused(generate(channel, (("authorization", f"Bearer {pki.tokens[caller]}x"),)))
    logging.getLogger("qarr.router").info("marker: logs were captured")
    texts = locked_mesh.logs.texts
    assert any("marker: logs were captured" in t for t in texts) and any("refused a call" in t for t in texts)
    secrets = [*pki.tokens.values(), *(t[:12] for t in pki.tokens.values())]
    leaks = [t[:200] for t in texts for s in secrets if s in t]
    assert not leaks, leaks
    assert not any(s in repr(locked_mesh.router.server.verifier) for s in secrets)
    assert not any(s in repr(locked_mesh.router.server.config) for s in secrets)
    print(f"\n{len(texts)} log records captured, 0 contain a token")
