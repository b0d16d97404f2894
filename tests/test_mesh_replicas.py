"""The mesh file's three ways to give a tier's replicas, and one tier server per listed replica."""

from __future__ import annotations

import pytest

from launcher.process import tier_processes
from mesh.config import MeshConfigError, parse_mesh


def tier(**where) -> dict:
    return {"tiers": [{"name": "t0", **where, "serve": {"engine": "fake", "metrics_port": 9500}}]}


@pytest.mark.parametrize("where, replicas", [
    ({"address": "127.0.0.1:50061"}, ["127.0.0.1:50061"]),
    ({"addresses": ["127.0.0.1:50061", "127.0.0.1:50062"]}, ["127.0.0.1:50061", "127.0.0.1:50062"]),
    ({"dns": "tier-t0.qarr.svc.cluster.local:50061"}, []),
])
def test_a_tier_lists_an_address_several_or_a_dns_name(where, replicas):
    """address, addresses or dns; static_addresses lists what the launcher starts (nothing for dns)."""
    assert parse_mesh(tier(**where)).tiers[0].static_addresses == replicas


@pytest.mark.parametrize("where, message", [
    ({}, "set exactly one of address, addresses, dns (got none)"),
    ({"address": "127.0.0.1:1", "dns": "x:1"}, "set exactly one of address, addresses, dns"),
    ({"addresses": ["127.0.0.1:1", "127.0.0.1:1"]}, "addresses must be distinct"),
    ({"dns": "no-port"}, "is not HOST:PORT"),
    ({"addresses": ["127.0.0.1:99999"]}, "is not HOST:PORT"),
])
def test_bad_replica_settings_name_the_tier(where, message):
    """Missing, doubled or malformed replica settings fail at start, naming the tier and what is wrong."""
    with pytest.raises(MeshConfigError) as e:
        parse_mesh(tier(**where), "mesh.yaml")
    assert "tiers[t0]" in str(e.value) and message in str(e.value)


def test_the_launcher_starts_one_tier_server_per_listed_replica():
    """Two addresses: two tier servers, each on its own port, a fixed metrics port shifted by the replica's index."""
    spec = parse_mesh(tier(addresses=["127.0.0.1:50061", "127.0.0.1:50062"])).tiers[0]
    servers = tier_processes(spec)
    assert [s.address for s in servers] == ["127.0.0.1:50061", "127.0.0.1:50062"]
    assert [s.name for s in servers] == ["tier t0#0", "tier t0#1"]
    for i, s in enumerate(servers):
        argv = s.argv
        assert argv[argv.index("--port") + 1] == str(50061 + i)
        assert argv[argv.index("--metrics-port") + 1] == str(9500 + i)
    assert tier_processes(parse_mesh(tier(dns="tier-t0:50061")).tiers[0]) == []
