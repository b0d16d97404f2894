"""TLS and mutual TLS on the router's listener refuse what they must at the handshake: issue 14, item 3.10."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.config import MeshConfigError, parse_mesh
from tests.router.routing_helpers import FakeTier, Router, tier_entry
from tests.security.conftest import PROFILES

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
async def routers(pki, tmp_path_factory):
    """Over one plaintext fake tier: a TLS router, and a router that also requires a client certificate
    signed by client-ca (mutual TLS). Yields their addresses."""
    tier = await FakeTier("a").start()
    tls = Router(tmp_path_factory.mktemp("tls"), [tier_entry(tier)], PROFILES, tls=pki.server("router"))
    mutual = Router(tmp_path_factory.mktemp("mtls"), [tier_entry(tier)], PROFILES, tls=pki.server("router", client_ca="client-ca.pem"))
    for r in (tls, mutual):
        await r.start()
    try:
        for r in (tls, mutual):
            await r.wait_serving("a")
        yield {name: f"127.0.0.1:{r.server.mesh.port}" for name, r in (("tls", tls), ("mutual", mutual))}
    finally:
        for r in (tls, mutual):
            await r.stop()
        await tier.stop()


async def health(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel:
        return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def refused(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await health(address, credentials)
    return e.value.code()


async def test_a_tls_router_refuses_plaintext_and_a_client_trusting_another_ca(routers, pki):
    """A plaintext client and a TLS client that trusts another CA both fail (UNAVAILABLE); trusting the mesh CA works."""
    assert await refused(routers["tls"], None) == grpc.StatusCode.UNAVAILABLE
    assert await refused(routers["tls"], pki.credentials(stranger_ca=True)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(routers["tls"], pki.credentials(ca="client-ca.pem")) == grpc.StatusCode.UNAVAILABLE
    assert await health(routers["tls"], pki.credentials()) == SERVING


async def test_a_mutual_tls_router_refuses_a_client_without_the_right_certificate(routers, pki):
    """Requiring client certificates: no certificate, one from another PKI, and the router's own tier certificate
    (router-ca, not client-ca) are all refused; a certificate client-ca signed is served."""
    address = routers["mutual"]
    assert await refused(address, None) == grpc.StatusCode.UNAVAILABLE
    assert await refused(address, pki.credentials()) == grpc.StatusCode.UNAVAILABLE
    assert await refused(address, pki.credentials(client="client", stranger_client=True)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(address, pki.credentials(client="router-client")) == grpc.StatusCode.UNAVAILABLE
    assert await health(address, pki.credentials(client="client")) == SERVING


def test_tls_settings_that_cannot_work_are_refused_when_the_file_is_read(pki):
    """The mesh file rejects a client CA without require_client_cert (and the reverse), a client certificate
    without its key, and auth whose tiers would take calls without the router's certificate."""
    tier = {"name": "a", "address": "127.0.0.1:1"}
    cases = {
        "client_ca is only used with require_client_cert": {"tls": {**pki.server("router", "client-ca.pem"), "require_client_cert": False}},
        "require_client_cert needs client_ca": {"tls": {**pki.server("router"), "require_client_cert": True}},
        "cert and key go together": {"upstream_tls": {"ca": pki.path("ca.pem"), "cert": pki.path("router-client.pem")}},
        "auth is on but upstream_tls has no client certificate": {"auth": {"tokens_file": pki.path("tokens")}},
        "max_in_flight_per_caller needs auth": {"max_in_flight_per_caller": 4},
        "auth needs tokens_file or tokens_env": {"auth": {"allow_plaintext_tiers": True}},
    }
    for message, settings in cases.items():
        with pytest.raises(MeshConfigError, match=message):
            parse_mesh({"tiers": [tier], **settings})
    config = parse_mesh({"tiers": [tier], "auth": {"tokens_file": "t"}, "upstream_tls": pki.upstream()})
    assert config.auth and config.upstream_tls.cert


def test_relative_certificate_paths_are_taken_from_the_mesh_files_folder(tmp_path):
    """tls, upstream_tls, auth and a tier's serve.tls paths are relative to the mesh file, like profiles."""
    from mesh.config import load_mesh

    (tmp_path / "mesh.yaml").write_text(
        "tls: {cert: c/router.pem, key: c/router.key}\n"
        "upstream_tls: {ca: c/ca.pem, cert: c/rc.pem, key: c/rc.key}\n"
        "auth: {tokens_file: c/tokens}\n"
        "tiers: [{name: a, address: '127.0.0.1:1', serve: {tls: {cert: c/t.pem, key: /abs/t.key, client_ca: c/rca.pem}}}]\n"
    )
    config = load_mesh(tmp_path / "mesh.yaml")
    c = str(tmp_path / "c")
    assert (config.tls.cert, config.upstream_tls.key, config.auth.tokens_file) == (f"{c}/router.pem", f"{c}/rc.key", f"{c}/tokens")
    serve = config.tiers[0].serve.tls
    assert (serve.cert, serve.key, serve.client_ca, serve.require_client_cert) == (f"{c}/t.pem", "/abs/t.key", f"{c}/rca.pem", True)
