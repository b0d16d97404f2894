"""The secure compose override and Kubernetes overlay name only real settings and lock every door."""

from __future__ import annotations

import yaml

from mesh.config import MeshConfig, load_mesh
from tests.harness import REPO
from tests.test_deploy_configs import mesh_of, render
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
    """deploy/k8s/overlays/gpu-secure: the router's ConfigMap is a locked mesh, secrets are volumes (never env values),
    the tiers' TLS variables are real settings, and every gRPC probe uses a plaintext health-only port."""
    docs = render("gpu-secure")
    _, config = mesh_of(docs)
    assert_locked(config)
    health_port = int(config.health_listen.rpartition(":")[2])
    deployments = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"}
    router = deployments.pop("qarr-router")
    assert {v["secret"]["secretName"] for v in router["volumes"] if "secret" in v} == {"qarr-router-tls", "qarr-router-tokens"}
    assert router["containers"][0]["readinessProbe"]["grpc"]["port"] == health_port
    assert "grpc" not in router["containers"][0]["livenessProbe"]  # the main port speaks TLS only
    assert deployments, "no tier Deployments rendered"
    for tier in deployments.values():
        container = tier["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert all(known_tier_variable(k) for k in env) and env["QARR_TIER_TLS__CLIENT_CA"].endswith("router-ca.pem")
        assert all(container[p]["grpc"]["port"] == int(env["QARR_TIER_HEALTH_PORT"]) for p in ("startupProbe", "readinessProbe", "livenessProbe"))
        assert not any("token" in k.lower() for k in env)
        assert {v["secret"]["secretName"] for v in tier["volumes"] if "secret" in v} == {"qarr-tier-tls"}
