"""The secure compose override and Kubernetes overlay name only real settings and lock every door."""

from __future__ import annotations

import yaml

from mesh.config import MeshConfig, load_mesh
from tests.harness import REPO
from tier_server.config import TierConfig


def known_tier_variable(name: str) -> bool:
    """QARR_TIER_<FIELD> or QARR_TIER_<FIELD>__<SUBFIELD> of a nested block (tls)."""
    field, _, sub = name.removeprefix("QARR_TIER_").lower().partition("__")
    info = TierConfig.model_fields.get(field)
    if info is None:
        return False
    if not sub:
        return True
    model = next((a for a in getattr(info.annotation, "__args__", (info.annotation,)) if hasattr(a, "model_fields")), None)
    return model is not None and sub in model.model_fields


def assert_locked(config: MeshConfig) -> None:
    assert config.tls is not None and config.auth is not None and config.max_in_flight_per_caller
    assert config.upstream_tls is not None and config.upstream_tls.cert and config.upstream_tls.ca


def test_compose_secure_override_sets_tls_on_every_tier_and_a_locked_router_config():
    """compose.secure.yaml gives each tier TLS with the router CA as its client CA and a health-only port, uses only
    real QARR_TIER_* settings, and points the router at a mesh file with TLS, mutual TLS to tiers and tokens."""
    override = yaml.safe_load((REPO / "compose.secure.yaml").read_text())
    base = yaml.safe_load((REPO / "compose.yaml").read_text())
    tiers = [name for name, s in base["services"].items() if "QARR_TIER_NAME" in s.get("environment", {})]
    for name in tiers:
        env = override["services"][name]["environment"]
        assert all(known_tier_variable(k) for k in env), env
        assert env["QARR_TIER_TLS__CLIENT_CA"].endswith("router-ca.pem") and env["QARR_TIER_HEALTH_PORT"]
    command = override["services"]["router"]["command"]
    config = load_mesh(REPO / command[command.index("--config") + 1].removeprefix("/app/"))
    assert_locked(config)


def test_kubernetes_secure_overlay_mounts_secrets_and_locks_router_and_tiers():
    """deploy/k8s-secure: the router's ConfigMap is a locked mesh, secrets are volumes (never env values), the tiers'
    TLS variables are real settings, and every probe uses the plaintext health-only port."""
    router_docs = list(yaml.safe_load_all((REPO / "deploy/k8s-secure/router.yaml").read_text()))
    config_map = next(d for d in router_docs if d["kind"] == "ConfigMap")
    config = MeshConfig.model_validate(yaml.safe_load(config_map["data"]["mesh.yaml"]))
    assert_locked(config)
    health_port = int(config.health_listen.rpartition(":")[2])
    router = next(d for d in router_docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {v["secret"]["secretName"] for v in router["volumes"]} == {"qarr-router-tls", "qarr-router-tokens"}
    assert all(router["containers"][0][p]["grpc"]["port"] == health_port for p in ("readinessProbe", "livenessProbe"))
    tier = yaml.safe_load((REPO / "deploy/k8s-secure/tiers.yaml").read_text())["spec"]["template"]["spec"]
    container = tier["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert all(known_tier_variable(k) for k in env) and env["QARR_TIER_TLS__CLIENT_CA"].endswith("router-ca.pem")
    assert all(container[p]["grpc"]["port"] == int(env["QARR_TIER_HEALTH_PORT"]) for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert not any("token" in k.lower() for k in env)
