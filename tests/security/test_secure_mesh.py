"""A locked mesh as a user runs it: the launcher starts mutual-TLS fake tiers and a TLS router with tokens from a
mesh file, and the `qarr` CLI talks to it with --ca-file and --token-file / QARR_TOKEN. No token shows in any
process's command line or in any log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from launcher.process import REPO, ServerProcess, free_port, local_env
from mesh.config import ClientTLS
from qarr.v1 import tier_service_pb2, tier_service_pb2_grpc
from tests.process_tree import descendants


GRPCURL = REPO / ".venv/bin/grpcurl"


def docs_grpcurl_line() -> str:
    """The grpcurl line of docs/security.md, as written."""
    line = next(l for l in (REPO / "docs/security.md").read_text().splitlines() if "grpcurl -cacert" in l)
    return line.strip()


def write_secure_mesh(pki, tmp_path: Path) -> Path:
    tier_tls = pki.server("tier", client_ca="router-ca.pem")
    serve = {"engine": "fake", "fake_token_delay_ms": 5, "grace_seconds": 1, "drain_notice_seconds": 0.2, "tls": tier_tls}
    mesh = {
        "listen": f"127.0.0.1:{free_port()}", "health_interval_s": 0.2, "health_timeout_s": 0.5, "load_interval_s": 0.2,
        "grace_seconds": 1, "drain_notice_seconds": 0.2,
        "tls": pki.server("router"), "upstream_tls": pki.upstream(), "auth": {"tokens_file": pki.path("tokens")},
        "max_in_flight_per_caller": 32,
        "tiers": [{"name": n, "address": f"127.0.0.1:{free_port()}", "model": "fake", "quantization": n, "serve": serve} for n in ("a", "b")],
    }
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh, sort_keys=False))
    return path


def qarr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], capture_output=True, text=True, timeout=60,
                          env=local_env(**(env or {})))


@pytest.fixture
def secure_launcher(pki, tmp_path):
    path = write_secure_mesh(pki, tmp_path)
    listen = yaml.safe_load(path.read_text())["listen"]
    launcher = ServerProcess(
        "launcher", [sys.executable, "-m", "launcher", "--config", str(path), "--log-dir", str(tmp_path / "logs")],
        listen, log=tmp_path / "launcher.log", stop_timeout_s=30, tls=ClientTLS(ca=pki.path("ca.pem")),
    ).start()
    try:
        launcher.wait_serving(timeout=90)
        yield launcher, path, tmp_path
    finally:
        launcher.stop()


def test_the_cli_reaches_a_locked_mesh_only_with_its_ca_and_a_token(secure_launcher, pki):
    """Through the launcher's TLS router and mutual-TLS tiers, `qarr generate --ca-file --token-file` and QARR_TOKEN
    are served; no token is UNAUTHENTICATED (exit 2), plaintext is UNAVAILABLE, health answers without a token, and a
    tier refuses a direct plaintext call."""
    launcher, path, tmp_path = secure_launcher
    target, ca = launcher.address, pki.path("ca.pem")
    token_file = pki.path("alice.token")  # as scripts/dev_certs.py writes it: the token alone, 0600
    assert os.stat(token_file).st_mode & 0o777 == 0o600

    done = qarr("generate", "hi", "--target", target, "--ca-file", ca, "--token-file", token_file, "--max-tokens", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "alpha bravo charlie \n" and "finish=length" in done.stderr
    done = qarr("tiers", "--target", target, "--ca-file", ca, env={"QARR_TOKEN": pki.tokens["bob"]})
    assert done.returncode == 0 and {line.split()[0] for line in done.stdout.splitlines()[1:]} == {"a", "b"}, done.stderr

    done = qarr("generate", "hi", "--target", target, "--ca-file", ca)
    assert done.returncode == 2 and "Unauthenticated" in done.stderr and "missing or invalid bearer token" in done.stderr
    done = qarr("generate", "hi", "--target", target, "--token-file", token_file, "--max-retries", "0", "--timeout", "5")
    assert done.returncode == 2 and "Unavailable" in done.stderr
    done = qarr("health", "--target", target, "--ca-file", ca)
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr

    grpcurl = docs_grpcurl_line().replace("certs/", f"{pki.dir}/").replace("127.0.0.1:50051", target)
    if GRPCURL.exists():
        listed = subprocess.run(["bash", "-c", grpcurl], capture_output=True, text=True, timeout=30, cwd=REPO)
        assert listed.returncode == 0 and "qarr.v1.RouterService" in listed.stdout, listed.stderr
        unauthenticated = subprocess.run(["bash", "-c", grpcurl.replace("Bearer $TOKEN", "Bearer nope")], capture_output=True,
                                         text=True, timeout=30, cwd=REPO)
        assert unauthenticated.returncode != 0 and "Unauthenticated" in unauthenticated.stderr

    mesh = yaml.safe_load(path.read_text())
    with grpc.insecure_channel(mesh["tiers"][0]["address"]) as channel:
        with pytest.raises(grpc.RpcError) as e:
            list(tier_service_pb2_grpc.TierServiceStub(channel).Generate(tier_service_pb2.TierServiceGenerateRequest(prompt="x"), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    # No token on any command line of the mesh (what `ps` shows), nor in any log it wrote.
    cmdlines = [p.cmdline for p in descendants(launcher.pid)]
    assert len(cmdlines) >= 3 and any("router" in c for c in cmdlines)
    tokens = list(pki.tokens.values())
    assert not [c for c in cmdlines for t in tokens if t in c]
    launcher.stop()
    logs = [launcher.log, *sorted((tmp_path / "logs").glob("*.log"))]
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "request finished" in text or '"caller"' in text, "the router's request log lines are not in its log"
    assert not [t for t in tokens if t in text]
    print(f"\nlocked mesh: {len(cmdlines)} processes, {len(logs)} logs ({len(text)} chars), 0 tokens in command lines or logs")
