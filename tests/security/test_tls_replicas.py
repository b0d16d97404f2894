"""A dns tier over mutual TLS: replicas are dialled by IP, their certificates name only the DNS name."""

from __future__ import annotations

from mesh.config import ServerTLS
from tests.router.routing_helpers import FakeTier, Router, collect, request
from tests.security.conftest import PROFILES, Pki, dev_certs


async def test_replicas_found_by_dns_are_checked_against_the_dns_name(started, tmp_path):
    """Certificates for tier-a.qarr.test alone (no IP): the router reaches both replicas at 127.0.0.1 over mutual
    TLS, checking them against the name it resolved."""
    pki = Pki(tmp_path / "pki", dev_certs.make_pki(tmp_path / "pki", hosts=("tier-a.qarr.test",)), tmp_path, {})
    tls = ServerTLS.model_validate(pki.server("tier", client_ca="router-ca.pem"))
    replicas = [await started(FakeTier("a", tls=tls)) for _ in range(2)]

    async def resolver(host: str, port: int) -> list[str]:
        assert host == "tier-a.qarr.test"
        return [r.address for r in replicas]

    tier = {"name": "a", "dns": "tier-a.qarr.test:50061", "dns_interval_s": 0.2}
    router = await started(Router(tmp_path, [tier], {"a": PROFILES["a"]}, resolver=resolver, upstream_tls=pki.upstream()))
    await router.wait_for(lambda: len(router.backends["a"].replicas) == 2 and all(
        r.serving for r in router.backends["a"].replicas.values()), what="both replicas SERVING over TLS")
    used = {(await collect(router.stub, request(f"q {i}", max_tokens=2, min_accuracy=0.0)))[1].replica for i in range(20)}
    assert used == {r.address for r in replicas}
