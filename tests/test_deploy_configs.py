"""The mesh files shipped for local, compose and Kubernetes runs stay valid against the typed configs."""

import yaml

from mesh.config import MeshConfig, load_mesh
from tests.harness import REPO
from tier_server.config import TierConfig


def tier_env_names() -> set[str]:
    return {f"QARR_TIER_{name.upper()}" for name in TierConfig.model_fields}


def test_local_and_compose_router_configs_load():
    """mesh.yaml and deploy/compose-mesh.yaml are valid router configs."""
    for path in ("mesh.yaml", "deploy/compose-mesh.yaml"):
        assert load_mesh(REPO / path).tiers


def test_compose_services_use_only_known_tier_settings_and_match_the_router_config():
    """Every QARR_TIER_* variable in compose.yaml is a real setting and every routed tier has a service."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    known = tier_env_names()
    names = set()
    for service in compose["services"].values():
        env = service.get("environment", {})
        assert set(k for k in env if k.startswith("QARR_TIER_")) <= known
        if "QARR_TIER_NAME" in env:
            names.add(env["QARR_TIER_NAME"])
    assert {t.name for t in load_mesh(REPO / "deploy/compose-mesh.yaml").tiers} <= names


def test_kubernetes_manifests_use_known_settings_and_a_valid_router_config():
    """The k8s tier env vars are real settings; the router ConfigMap holds a valid config naming every tier."""
    docs = list(yaml.safe_load_all((REPO / "deploy/k8s/tiers.yaml").read_text()))
    known = tier_env_names()
    names = set()
    for d in docs:
        if d["kind"] == "Deployment":
            env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert set(env) <= known
            names.add(env["QARR_TIER_NAME"])
    config_map = next(d for d in yaml.safe_load_all((REPO / "deploy/k8s/router.yaml").read_text()) if d["kind"] == "ConfigMap")
    config = MeshConfig.model_validate(yaml.safe_load(config_map["data"]["mesh.yaml"]))
    assert {t.name for t in config.tiers} == names
