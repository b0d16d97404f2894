"""serve.cpu_cores: tiers that share one CPU each get their own cores (vLLM CPU build's OpenMP binding)."""

import pytest

from mesh.config import MeshConfigError, TierSpec, load_mesh
from tier_server.__main__ import engine_environment
from tier_server.config import load_tier_config, tier_argv


def tier(serve: dict) -> TierSpec:
    return TierSpec.model_validate({"name": "t", "address": "127.0.0.1:1", "serve": serve})


def test_a_tiers_cores_reach_its_engine_environment_through_the_launchers_flags(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    cfg = load_tier_config(tier_argv(tier({"cpu_cores": "2-3,6"})))
    assert engine_environment(cfg) == {"VLLM_CPU_OMP_THREADS_BIND": "2-3,6"}


def test_without_cores_the_callers_binding_stands_else_none(monkeypatch):
    cfg = load_tier_config(tier_argv(tier({})))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    assert engine_environment(cfg) == {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    assert engine_environment(cfg) == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@pytest.mark.parametrize("cores", ["zero", "0-", "0;1", "all", ""])
def test_cores_that_are_not_a_core_list_fail_at_start_naming_the_field(tmp_path, cores):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(f"tiers:\n  - name: t\n    address: 127.0.0.1:1\n    serve: {{cpu_cores: '{cores}'}}\n")
    with pytest.raises(MeshConfigError) as err:
        load_mesh(mesh)
    assert "cpu_cores" in str(err.value) and str(mesh) in str(err.value)
