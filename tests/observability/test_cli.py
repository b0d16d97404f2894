"""The flags wire observability in for real processes: `python -m tier_server` / `python -m router`."""

from __future__ import annotations

import json
import time

import grpc

from qarr.v1 import router_service_pb2 as pb, router_service_pb2_grpc
from tests.harness import free_port, start_router_process, start_tier_process
from tests.observability.conftest import scrape, value


def scrape_when_up(port: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_metrics_port_and_json_log_flags_work_on_real_processes(tmp_path):
    """A fake tier and the router, started with --metrics-port and --log-format json, serve /metrics and log JSON lines."""
    tier_metrics, router_metrics = free_port(), free_port()
    tier = start_tier_process(
        "t1", "--engine", "fake", "--metrics-port", str(tier_metrics), "--log-format", "json", log=tmp_path / "tier.log"
    )
    tier_address = tier.address
    router_address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "mesh.yaml"
    config.write_text(f"listen: {router_address}\ntiers:\n  - name: t1\n    address: {tier_address}\n    cost_per_million_tokens: 1.0\n")
    router = start_router_process(config, "--metrics-port", str(router_metrics), "--log-format", "json",
                                  listen=router_address, log=tmp_path / "router.log")
    try:
        tier.wait_serving(timeout=60)
        router.wait_serving(timeout=60)
        with grpc.insecure_channel(router_address) as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            deadline = time.monotonic() + 10
            while True:  # the router learns tier health asynchronously
                try:
                    list(stub.Generate(pb.GenerateRequest(prompt="hello there", request_id="cli-1", routing=pb.RoutingHints(tier="t1")), timeout=10))
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        r = scrape_when_up(router_metrics)
        assert value(r, "qarr_router_requests_total", tier="t1", code="OK", finish_reason="length") == 1
        assert value(r, "qarr_router_estimated_cost_total", tier="t1") > 0
        t = scrape_when_up(tier_metrics)
        assert value(t, "qarr_tier_requests_total", tier="t1", code="OK", finish_reason="length") == 1
        assert value(t, "qarr_tier_engine_up", tier="t1") == 1
    finally:
        router.stop(timeout=10)
        tier.stop(timeout=10)
    lines = [json.loads(line) for line in (tmp_path / "router.log").read_text().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request finished" and line["request_id"] == "cli-1" for line in lines)
    tier_lines = (tmp_path / "tier.log").read_text().splitlines()
    assert any(json.loads(line).get("event", "").startswith("tier t1 serving") for line in tier_lines if line.startswith("{"))
